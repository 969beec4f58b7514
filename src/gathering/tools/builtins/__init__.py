"""Built-in tools as plain functions: files in a workspace, and a calculator."""
