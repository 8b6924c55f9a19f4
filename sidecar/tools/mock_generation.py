"""How a simulated model answers: when the first token comes, how fast the rest
follow, how many there are, and which faults it throws at what rate.

Per tier, time to first token and tokens per second are drawn from lognormal
distributions around means calibrated to the seed's measured total latencies
(42/78/156/485/742 ms for a 64-token answer), so a load test sees spread and
tails, not a fixed sleep. Lengths honour `max_tokens` and vLLM's `min_tokens`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

TIER_LATENCY_MS = {1: 42, 2: 78, 3: 156, 4: 485, 5: 742}
TTFT_SHARE = 0.4            # of the total latency of a typical answer
TYPICAL_TOKENS = 64
SIGMA = 0.25                # lognormal spread of TTFT and speed
LENGTH_SIGMA = 0.6
TOKENS_PER_CHUNK = 4        # tokens per write (and per pause); their events: mock_apis.StreamEvents
FAULTS = ("429", "500", "502", "503", "stall", "drop")


def _lognormal(rng: random.Random, mean: float, sigma: float) -> float:
    # mu chosen so the distribution's mean is `mean`
    return rng.lognormvariate(math.log(mean) - sigma * sigma / 2, sigma) if mean > 0 else 0.0


@dataclass
class Generation:
    ttft_s: float
    tokens: int
    seconds_per_token: float


@dataclass
class Model:
    tier_rank: int
    latency_scale: float = 1.0
    fault_rates: dict = field(default_factory=dict)   # fault -> probability per request
    rng: random.Random = field(default_factory=random.Random)

    def generation(self, body: dict) -> Generation:
        total = TIER_LATENCY_MS.get(self.tier_rank, 100) / 1000 * self.latency_scale
        ttft = _lognormal(self.rng, total * TTFT_SHARE, SIGMA)
        per_token = _lognormal(self.rng, total * (1 - TTFT_SHARE) / TYPICAL_TOKENS, SIGMA)
        tokens = max(1, round(_lognormal(self.rng, TYPICAL_TOKENS, LENGTH_SIGMA)))
        low = body.get("min_tokens")
        high = body.get("max_tokens") or body.get("max_completion_tokens") or body.get("max_output_tokens")
        if isinstance(low, int) and low > 0:
            tokens = max(tokens, low)
        if isinstance(high, int) and high > 0:
            tokens = min(tokens, high)
        return Generation(ttft, tokens, per_token)

    def fault(self) -> str:
        """One of FAULTS for this request, or "" (at the configured rates)."""
        draw = self.rng.random()
        for name in FAULTS:
            draw -= self.fault_rates.get(name, 0.0)
            if draw < 0:
                return name
        return ""


def parse_rates(text: str) -> dict:
    """"429=0.01,503=0.005,stall=0.001" -> {"429": 0.01, ...}; unknown names refused."""
    rates = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        if name not in FAULTS:
            raise ValueError(f"unknown fault {name!r}; expected one of {', '.join(FAULTS)}")
        rates[name] = float(value)
    if sum(rates.values()) > 1:
        raise ValueError("fault rates add up to more than 1")
    return rates
