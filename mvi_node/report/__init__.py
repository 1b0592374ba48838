"""Report stage: TID 1500 Structured Report and Grad-CAM secondary captures, in the
source study, with UIDs derived from the exam and the model so nothing is duplicated."""
