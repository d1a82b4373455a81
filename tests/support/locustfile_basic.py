"""A minimal kvswarm locustfile for the measurement-core tests: one fixed prompt."""

from locust import task

from kvswarm.locust.users import LLMUser


class BasicUser(LLMUser):
    scenario = "basic"

    @task
    def ask(self) -> None:
        self.send(messages=[{"role": "user", "content": "Say something."}], max_tokens=16)
