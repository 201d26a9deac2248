"""Typed settings: flags override env (SEGQ_*), which overrides these defaults."""
from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from workers.storage import absolute


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SEGQ_", extra="ignore")

    home: Path = Field(Path(".segq"), description="local state: embedded cluster, data, storage")
    redis_url: str | None = Field(None, description="Redis URL; default: the embedded Redis")
    ray_address: str | None = Field(
        None, description="Ray dashboard / Jobs API URL (http://host:8265); default: the embedded head"
    )
    storage: str | None = Field(None, description="checkpoint and Tune storage; default: HOME/storage")
    cluster_redis_url: str | None = Field(
        None, description="Redis URL as the cluster's nodes reach it, when it differs (docker compose)"
    )
    mlflow_uri: str | None = Field(None, description="MLflow tracking URI for jobs whose spec names none")
    max_running_jobs: int = Field(1, ge=1, description="jobs of the queue that run at once; a job submitted "
                                                       "with this setting waits while that many run")

    def embedded(self) -> bool:
        """No Ray address given: the jobs run on the embedded default (running, or started by `submit`)."""
        return self.ray_address is None

    def resolved_home(self) -> Path:
        return self.home.expanduser().resolve()

    def resolved_storage(self) -> str:
        if self.storage:
            return absolute(self.storage)
        return str(self.resolved_home() / "storage")
