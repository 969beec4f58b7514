"""The catalog: providers, models (context windows, prices), personas and settings, stored in
PostgreSQL and changed by admins."""
