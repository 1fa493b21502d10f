"""Where the work runs: the fold pool on this machine's free cores, a Dask cluster, and the
background processes and threads that overlap MLflow's work with the folds."""
