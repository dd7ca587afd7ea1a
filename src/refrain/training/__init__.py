"""Training infrastructure around the LightningModules: callbacks, checkpoint IO, resume, faults, cluster, schedules."""
