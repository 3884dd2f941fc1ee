"""The lrsearch worker: claims jobs (trial slots and range tests) from the shared database with
leases, runs each in a spawned child process, and records the results behind a fencing check.
Run any number of them, on any number of machines, against one PostgreSQL database."""
