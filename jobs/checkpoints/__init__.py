"""What a trained checkpoint is used for: scoring it (`segq eval`) and predicting with it (`segq predict`, export)."""
