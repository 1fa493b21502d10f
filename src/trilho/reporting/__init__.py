"""What a person reads: the run's summary, figures, the HTML pages (templates beside the
renderer), the notebook's helpers and publishing pages to the lake and MLflow."""
