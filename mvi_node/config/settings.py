"""Typed settings for the node.

Precedence, highest first: command-line flags, environment variables
(``MVI_<SECTION>__<KEY>``, e.g. ``MVI_LISTENER__PORT=11113``), the TOML file,
the built-in defaults. Every default works on one machine.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from mvi_node.config.replay import ReplaySettings
from mvi_node.config.sop_classes import DEFAULT_TRANSFER_SYNTAXES

_AE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # DICOM AE VR: no backslash, no control chars


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key and why."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _check_ae(value: str) -> str:
    if not _AE_RE.match(value) or not value.strip():
        raise ValueError("an AE title is 1-16 printable characters, no backslash")
    return value.strip()


class _CertificateSettings(_Section):
    enabled: bool = False
    certificate: Path | None = None
    private_key: Path | None = None
    #: CA bundle used to verify client certificates; when set, clients must present one.
    client_ca: Path | None = None

    @model_validator(mode="after")
    def _files_present(self) -> "_CertificateSettings":
        if self.enabled:
            for name in ("certificate", "private_key"):
                path = getattr(self, name)
                if path is None:
                    raise ValueError(f"{name} is required when TLS is enabled")
                if not Path(path).is_file():
                    raise ValueError(f"{name} file not found: {path}")
            if self.client_ca is not None and not Path(self.client_ca).is_file():
                raise ValueError(f"client_ca file not found: {self.client_ca}")
        return self


class TlsSettings(_CertificateSettings):
    #: a TLS handshake not finished in this time is dropped (it runs off the accept loop)
    handshake_timeout_s: float = Field(default=10.0, gt=0, le=300)


class AdminTlsSettings(_CertificateSettings):
    """HTTPS for the admin API (the bearer token then never crosses the network in clear)."""


class ListenerSettings(_Section):
    ae_title: str = "MVI_NODE"
    #: DICOM is served on all interfaces: PACS connects from another host.
    host: str = "0.0.0.0"
    port: int = Field(default=11112, ge=1, le=65535)
    require_called_ae: bool = True
    #: Calling AE titles allowed to associate, as ``AE`` or ``AE@host``; empty allows all.
    allowed_callers: list[str] = Field(default_factory=list)
    #: associations in progress at once, over all listener processes (peers that sent an A-ASSOCIATE-RQ; a bare TCP
    #: connection is not counted); one more is refused "local limit exceeded"
    max_associations: int = Field(default=16, ge=1, le=1024)
    max_pdu: int = Field(default=131072, ge=4096)
    #: Listener processes on the port, each new association to the least busy
    #: (mvi_node.receive.balance); 0: one per CPU core, at most 4 (a child listener holds about 80 MB).
    #: Several pay off when PACS sends several associations at once (4 senders on 2
    #: cores: 1.14x Orthanc with 2, 0.76x with 1; bench/RESULTS.md, #15).
    workers: int = Field(default=0, ge=0, le=64)
    #: "all": every storage SOP class (what PACS routes: dose SRs, screen captures, PDFs ...);
    #: or a list of SOP Class UIDs, which restricts negotiation to those.
    sop_classes: Literal["all"] | list[str] = "all"
    #: classes no recipe reads (mvi_node.config.sop_classes.USED_SOP_CLASSES): "store"
    #: stages them (selection gives them the role "other"), "discard" acknowledges and
    #: drops them. Counted either way (mvi_unused_instances_total).
    unused_sop_classes: Literal["store", "discard"] = "store"
    transfer_syntaxes: list[str] = Field(default_factory=lambda: list(DEFAULT_TRANSFER_SYNTAXES))
    #: largest encoded instance accepted; a larger one is refused (0xC002) without being kept
    max_instance_mb: int = Field(default=4096, ge=1, le=1 << 20)
    #: largest size a deflated dataset may inflate to (a deflate bomb is refused, 0xC002)
    max_inflated_mb: int = Field(default=1024, ge=1, le=1 << 20)
    #: a C-STORE whose command announces a dataset that does not start within this
    #: time is answered 0xC000 (a sender that sends an empty dataset otherwise waits forever)
    dataset_timeout_s: float = Field(default=10.0, gt=0, le=3600)
    #: a connection that sends no A-ASSOCIATE-RQ within this time is closed (the ARTIM
    #: timer, PS3.8 §9.1.5): a load balancer's bare TCP check or a silent peer would
    #: otherwise hold one of max_associations for the 30 s ACSE timeout
    request_timeout_s: float = Field(default=5.0, gt=0, le=300)
    #: Refuse new associations (and answer stores 0xA700) below this much free disk.
    min_free_disk_mb: int = Field(default=1024, ge=0)
    network_timeout_s: float = Field(default=60.0, gt=0)
    tls: TlsSettings = Field(default_factory=TlsSettings)

    _ae = field_validator("ae_title")(_check_ae)

    @field_validator("allowed_callers")
    @classmethod
    def _callers(cls, values: list[str]) -> list[str]:
        for entry in values:
            ae, _, host = entry.partition("@")
            _check_ae(ae)
            if "@" in entry and not host:
                raise ValueError(f"{entry!r}: host after '@' is empty")
        return values

    @field_validator("sop_classes", "transfer_syntaxes")
    @classmethod
    def _uids(cls, values: str | list[str]) -> str | list[str]:
        from pydicom.uid import UID

        if values == "all":
            return values
        for uid in values:
            if not UID(uid).is_valid:
                raise ValueError(f"{uid!r} is not a valid UID")
        if not values:
            raise ValueError("must not be empty")
        return values


class StagingSettings(_Section):
    backend: Literal["filesystem"] = "filesystem"
    #: "fsync": acknowledge only after the file is fsynced (default).
    #: "batched": acknowledge after write + rename; a background thread fsyncs the files
    #: and their folders every ``batch_interval_s`` (weaker; opt in). A killed process
    #: loses nothing; an OS crash or power loss can lose what was acknowledged in the
    #: last ``batch_interval_s`` (plus the time one batch takes to sync).
    durability: Literal["fsync", "batched"] = "fsync"
    batch_interval_s: float = Field(default=0.5, gt=0, le=60)


class RetentionSettings(_Section):
    """What the node keeps, so that it runs for years. A study is purged only once no job
    for it is queued or running; 0 keeps forever."""

    #: staged instances of a finished study, days after its last instance
    staging_days: float = Field(default=14.0, ge=0)
    #: result files (SR, SC, SEG, KOS) whose deliveries are finished
    results_days: float = Field(default=90.0, ge=0)
    #: finished jobs (done, failed, dead) in the job history
    jobs_days: float = Field(default=365.0, ge=0)
    #: below this much free disk, the oldest finished studies go first, whatever their age (0: off)
    free_disk_target_mb: int = Field(default=0, ge=0)
    interval_s: float = Field(default=3600.0, gt=0)


class CompletionSettings(_Section):
    quiet_seconds: float = Field(default=10.0, gt=0, le=86400)
    poll_seconds: float = Field(default=1.0, gt=0, le=60)
    #: hold a completed study's job this long, for exams whose parts come as several
    #: studies (a phase, the tumour outline); a part later still supersedes the result
    exam_wait_seconds: float = Field(default=0.0, ge=0, le=86400)
    #: studies of one patient whose study date/time lie this close are parts of one exam
    #: even without a shared accession number or frame of reference (0: off)
    exam_window_minutes: float = Field(default=0.0, ge=0, le=7 * 1440)


class SelectSettings(_Section):
    #: a site rules file layered over the shipped defaults (add, override or disable rules)
    rules: Path | None = None
    #: parse each instance's header as it is staged, so a study's job finds its headers
    #: parsed (0: off, the job parses them); at most this many kept at once (~45 kB each)
    prefetch_headers: int = Field(default=5_000, ge=0, le=1_000_000)

    @field_validator("rules")
    @classmethod
    def _exists(cls, value: Path | None) -> Path | None:
        if value is not None and not Path(value).is_file():
            raise ValueError(f"rules file not found: {value}")
        return value


class ModelSettings(_Section):
    #: extra model roots (``<root>/<recipe>/<version>/manifest.toml``) besides the shipped ``models/``
    dirs: list[Path] = Field(default_factory=list)
    #: serve a given version of a recipe instead of the highest: ``{ct_ap_resnet18 = "1.0.0"}``
    pins: dict[str, str] = Field(default_factory=dict)
    #: ONNX Runtime providers in order of preference; those not present are skipped
    providers: list[str] = Field(default_factory=lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                                                         "CPUExecutionProvider"])
    #: Grad-CAM secondary captures per exam (the most suspicious slices)
    secondary_captures: int = Field(default=3, ge=0, le=20)
    #: further lesions of an automatic segmentation the SR reports (own measurement group
    #: and tracking UID each) besides the one the recipe evaluated
    other_lesions: int = Field(default=3, ge=0, le=20)

    @field_validator("dirs")
    @classmethod
    def _dirs(cls, values: list[Path]) -> list[Path]:
        for d in values:
            if not Path(d).is_dir():
                raise ValueError(f"model directory not found: {d}")
        return values


class InferenceSettings(_Section):
    #: numeric precision of the served graphs: "auto" = the fastest reduced-precision copy
    #: whose accuracy check passed (its manifest says), else fp32; or pinned. A pinned copy
    #: that a model does not ship, or whose check failed, is not served: fp32 is.
    precision: Literal["auto", "fp32", "int8", "fp16", "bf16"] = "auto"
    #: load every served graph (and the DICOM tables the ROI and report code read) when
    #: the node starts, in the background, instead of in the first exam's job
    warm_up: bool = True


class ClinicalSettings(_Section):
    #: JSON / CSV file or folder of JSON records keyed by accession number or patient ID
    source: Path | None = None

    @field_validator("source")
    @classmethod
    def _exists(cls, value: Path | None) -> Path | None:
        if value is not None and not Path(value).exists():
            raise ValueError(f"clinical factor source not found: {value}")
        return value


class JobSettings(_Section):
    backend: Literal["sqlite"] = "sqlite"
    max_attempts: int = Field(default=3, ge=1, le=100)
    workers: int = Field(default=1, ge=0, le=64)


class DispatchSettings(_Section):
    #: where results go, each ``AE@HOST:PORT``
    destinations: list[str] = Field(default_factory=list)
    #: calling AE title for outbound associations; empty means the listener's AE title
    calling_ae: str = ""
    tls: bool = False
    #: CA bundle to verify destinations over TLS (system CAs when unset)
    tls_ca: Path | None = None
    backoff_initial_s: float = Field(default=30.0, gt=0)
    backoff_max_s: float = Field(default=900.0, gt=0)
    max_attempts: int = Field(default=8, ge=1, le=100)
    workers: int = Field(default=1, ge=1, le=16)
    #: connection, ACSE, DIMSE and network timeout of every outgoing association (a peer
    #: that accepts TCP and never answers holds a dispatch worker this long, not minutes)
    timeout_s: float = Field(default=30.0, gt=0, le=600)

    @field_validator("destinations")
    @classmethod
    def _destinations(cls, values: list[str]) -> list[str]:
        from mvi_node.config.destination import Destination

        for spec in values:
            Destination.parse(spec)
        return values

    @field_validator("calling_ae")
    @classmethod
    def _calling(cls, value: str) -> str:
        return _check_ae(value) if value else value


class OrthancSettings(_Section):
    """Orthanc as staging store and front door (deploy/orthanc/ documents both topologies)."""

    enabled: bool = False
    url: str = "http://127.0.0.1:8042"
    username: str | None = None
    password: SecretStr | None = None
    #: the PACS as an Orthanc modality: results are uploaded to Orthanc and sent from there
    modality: str | None = None
    #: hours the staging Orthanc keeps a study after its results went out; 0 deletes at once
    retention_hours: float = Field(default=0.0, ge=0)
    #: how often Orthanc's /changes is read to catch up on hand-offs the plugin lost
    changes_poll_seconds: float = Field(default=30.0, gt=0)


ADMIN_TOKEN_MIN = 16


class AdminSettings(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8642, ge=0, le=65535)
    #: bearer token; at least 16 characters, no whitespace. Required off loopback.
    token: SecretStr | None = None
    tls: AdminTlsSettings = Field(default_factory=AdminTlsSettings)

    @field_validator("token")
    @classmethod
    def _token_strength(cls, value: SecretStr | None) -> SecretStr | None:
        # The value is never echoed: error messages name the key and the rule only.
        if value is None:
            return value
        secret = value.get_secret_value()
        if not secret.strip():
            raise ValueError(f"is empty; set at least {ADMIN_TOKEN_MIN} characters or remove the key")
        if any(c.isspace() or not c.isprintable() for c in secret):
            raise ValueError("must not contain whitespace or control characters")
        if len(secret) < ADMIN_TOKEN_MIN:
            raise ValueError(f"is shorter than {ADMIN_TOKEN_MIN} characters")
        return value

    @model_validator(mode="after")
    def _token_off_loopback(self) -> "AdminSettings":
        if self.host not in ("127.0.0.1", "::1", "localhost") and self.token is None:
            raise ValueError("token is required when the admin endpoint is bound beyond loopback")
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MVI_", env_nested_delimiter="__", extra="forbid", validate_assignment=True
    )

    data_dir: Path = Path("./var")
    listener: ListenerSettings = Field(default_factory=ListenerSettings)
    staging: StagingSettings = Field(default_factory=StagingSettings)
    completion: CompletionSettings = Field(default_factory=CompletionSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    select: SelectSettings = Field(default_factory=SelectSettings)
    models: ModelSettings = Field(default_factory=ModelSettings)
    inference: InferenceSettings = Field(default_factory=InferenceSettings)
    clinical: ClinicalSettings = Field(default_factory=ClinicalSettings)
    jobs: JobSettings = Field(default_factory=JobSettings)
    dispatch: DispatchSettings = Field(default_factory=DispatchSettings)
    orthanc: OrthancSettings = Field(default_factory=OrthancSettings)
    admin: AdminSettings = Field(default_factory=AdminSettings)
    replay: ReplaySettings = Field(default_factory=ReplaySettings)
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    _toml_file: Path | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if _TOML_FILE is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=_TOML_FILE))
        return tuple(sources)

    @property
    def staging_dir(self) -> Path:
        return self.data_dir / "staging"

    @property
    def index_db(self) -> Path:
        return self.data_dir / "index.sqlite3"

    @property
    def jobs_db(self) -> Path:
        return self.data_dir / "jobs.sqlite3"

    @property
    def results_dir(self) -> Path:
        return self.data_dir / "results"


_TOML_FILE: Path | None = None


def _format_errors(exc: ValidationError, origin: str) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{origin}: {key}: {msg}")
    return "\n".join(lines)


def _deep_set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[leaf] = value


def load_settings(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Build the effective settings; raise :class:`ConfigError` naming each bad key.

    ``overrides`` maps dotted keys (``listener.port``) to values given on the command line.
    """
    global _TOML_FILE
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: configuration file not found")
        import tomllib

        try:
            tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    init: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        if value is not None:
            _deep_set(init, key, value)
    _TOML_FILE = path
    try:
        return Settings(**init)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, str(path) if path else "configuration")) from None
    finally:
        _TOML_FILE = None


def masked_dump(settings: Settings) -> dict[str, Any]:
    """Effective values as plain data, secrets shown as ``**********``."""
    return settings.model_dump(mode="json")
