"""The parts `ProtectionOrchestrator` is made of: the clock, the position ledger, the decision
pipeline and the observers (metrics, audit)."""
