"""A step ramp for the router's locustfile: add --kit-step-users users every
--kit-step-seconds until -u users, then hold until -t (or, without -t, one more
step). Use it with both files:

    locust -f loadtests/locustfile.py,loadtests/shapes.py --headless -u 100 -t 5m \\
        --kit-step-users 10 --kit-step-seconds 30 --host ...

Each step's numbers are in the report's latency-over-time chart; finding where
the router's added p99 crosses a bound is what loadtests/run.py --find-limit does.
"""

from __future__ import annotations

from locust import LoadTestShape


class StepRamp(LoadTestShape):
    def tick(self):
        options = self.runner.environment.parsed_options
        step_users, step_s = options.kit_step_users, options.kit_step_seconds
        most = options.num_users or step_users
        elapsed = self.get_run_time()
        limit = options.run_time or (most / step_users + 1) * step_s
        if elapsed >= limit:
            return None
        users = min(most, step_users * (int(elapsed // step_s) + 1))
        return users, max(1, step_users)
