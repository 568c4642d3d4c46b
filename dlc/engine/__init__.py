"""The variational engine: forward pass, label scoring, hidden-text inference, prompt updates, calibration, proposals, metrics, VI maths."""
