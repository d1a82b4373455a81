"""A kvswarm locustfile for the fault tests: short chat requests with a short pause
between them (so a user whose connections are refused does not spin)."""

from locust import constant, task

from kvswarm.locust.users import LLMUser


class FaultUser(LLMUser):
    scenario = "faults"
    wait_time = constant(0.02)

    @task
    def ask(self) -> None:
        self.send(messages=[{"role": "user", "content": "Say something short."}], max_tokens=6)
