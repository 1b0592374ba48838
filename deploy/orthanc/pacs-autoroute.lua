-- Topology (b): the hospital PACS (an Orthanc here) auto-routes CT and MR studies, with
-- their SEG/SR/PR annotations, to the staging Orthanc (declared as modality 'STAGING'),
-- but never what came back from it (the node's results): no routing loop.
function OnStoredInstance(instanceId, tags, metadata, origin)
  if origin['RequestOrigin'] == 'DicomProtocol' and origin['RemoteAet'] == 'STAGING' then
    return
  end
  local modality = tags['Modality']
  if modality == 'CT' or modality == 'MR' or modality == 'SEG' or modality == 'SR' or modality == 'PR' then
    SendToModality(instanceId, 'STAGING')
  end
end
