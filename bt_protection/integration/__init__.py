"""The thin backtrader adapter: strategy mixin, regime indicator, analyzer, rebalancer."""
