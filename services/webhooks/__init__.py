"""Webhooks: tell a tenant's app when one of its users' models changed (signed, retried,
logged). `signing` is what receivers need; `sender` posts one event; `dispatcher`
follows the event log."""
