"""What dlc shows: evaluation statistics and run reports, graph views, the fit progress display."""
