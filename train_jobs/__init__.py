"""Training and scoring jobs: experiments (one config x seeds) and scoring jobs as runs in the database,
launched as separate processes (local, torchrun, Slurm), followed through heartbeat and exit files, and
imported when done.

The database row of a run is the source of truth; jobs never import the app. The app uses
``train_jobs.api``. Modules: ``states`` (the state machine), ``experiments`` (create one from a
validated config, delete one), ``scoring`` (queue a scoring job), ``jobqueue`` (GPU slots, launching),
``launchers`` + ``slurm`` (one interface, three backends), ``wrap`` (the process that runs a job and
records its exit status), ``reconcile`` (poll, cancel, lost runs), ``poller`` + ``locks`` (one poller per
instance, polls that never overlap), ``resume`` (queue a stopped run again from its checkpoint),
``results`` (import a finished run), ``gpus`` (discovery), ``runfiles`` (what a run folder holds),
``procs`` (process identity and signals), ``provenance``, ``settings``, ``views`` (what the Train page
shows: summaries, curves, ETA), ``comparison`` (seeds compared) and ``demo`` (the one-click synthetic proof).

This package imports nothing at load time, so the job wrapper (``python -m train_jobs.wrap``) starts fast.
"""
