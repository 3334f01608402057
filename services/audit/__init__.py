"""Audit and admin: queries over the log (`queries`), the admin backend (`backend`) and
the server component that mounts them (`component`). The corrective actions themselves
live in `services.corrective`."""
