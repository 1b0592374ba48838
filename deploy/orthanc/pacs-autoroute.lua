-- The hospital PACS (an Orthanc here) auto-routes every instance to the staging Orthanc,
-- except what came back from it (the node's results): no routing loop.
function OnStoredInstance(instanceId, tags, metadata, origin)
  if origin['RequestOrigin'] == 'DicomProtocol' and origin['RemoteAet'] == 'STAGING' then
    return
  end
  SendToModality(instanceId, 'STAGING')
end
