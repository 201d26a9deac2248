"""How a job's trials run under Ray Tune: the trial function, schedulers and search, and reports forwarded from Ray Train."""
