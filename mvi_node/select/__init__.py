"""Series selection: a role for every series of an exam, and the recipes it can feed.

- :mod:`.series`: headers -> units (a series, or one phase of a multi-phase series);
- :mod:`.rules`: the TOML rule language (shipped ``rules/default.toml`` + site file);
- :mod:`.timeline`: delay after contrast, from ContrastBolusStartTime or estimated;
- :mod:`.engine`: exams, two rule passes, agent, preferences;
- :mod:`.recipes`: roles each recipe needs; :mod:`.report`: JSON/text report;
- :mod:`.cli`: ``mvi-node select``; :mod:`.job`: the report stored with study jobs.
"""
