"""Message handling: broker setup, thin actors, the handlers they call and the outbox relay."""
