"""Access control for the dashboard and the JSON API: roles and what each may see and do
(`fleet.auth.roles`), password hashing (`fleet.auth.passwords`). The users, sessions and
API tokens themselves live in the store (`fleet.store.users`)."""
