-- Topology (a): the hospital PACS (an Orthanc here) auto-routes CT and MR studies straight
-- to the node's listener (declared as modality 'MVI_NODE'), with their SEG/SR annotations,
-- but never what came back from the staging Orthanc (the node's results): no loop.
function OnStoredInstance(instanceId, tags, metadata, origin)
  if origin['RequestOrigin'] == 'DicomProtocol' and origin['RemoteAet'] == 'STAGING' then
    return
  end
  local modality = tags['Modality']
  if modality == 'CT' or modality == 'MR' or modality == 'SEG' or modality == 'SR' or modality == 'PR' then
    SendToModality(instanceId, 'MVI_NODE')
  end
end
