"""Process control: interpreter work on users' models in an isolated child (isolation, worker)
and the supervisor that runs convert in one (supervise)."""
