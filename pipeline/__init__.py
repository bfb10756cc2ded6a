"""The reader path: NFQUEUE binding, the flow table, the judge and the guard, resets, conntrack."""
