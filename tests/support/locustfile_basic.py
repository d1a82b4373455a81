"""A minimal kvswarm locustfile for the measurement-core tests: one fixed prompt."""

from kvswarm.users import LLMUser
from locust import task


class BasicUser(LLMUser):
    scenario = "basic"

    @task
    def ask(self) -> None:
        self.send(messages=[{"role": "user", "content": "Say something."}], max_tokens=16)
