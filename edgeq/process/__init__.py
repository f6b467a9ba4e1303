"""Process control: interpreter work on users' models in an isolated child (isolation, worker),
the supervisor that runs convert in one (supervise), and how every Python child is started and
how its end by a signal reads (spawn)."""
