"""Redis stops for 10 s in the middle of a 2-worker trial and starts again (same port, same AOF):
the trial finishes, and after aggregation every epoch's metrics are in the summary exactly once.

The Redis is TLS-only (`--port 0 --tls-port P`, client certificates required) and every part
reaches it by `rediss://`: the CLI, the job's driver and its aggregator, the trial's workers, and
the `segq aggregator` service; so the same run shows TLS end to end."""
import json
import subprocess
import time

import pytest
import redis

from jobs import keys
from tests.conftest import SEGQ, run_segq, wait_until
from tests.failure_checks import metric_events
from tests.redis_servers import tls_redis
from workers.publisher import MetricsPublisher
from workers.redis_client import open_redis

EPOCHS = 4
OUTAGE_S = 10


def test_a_full_buffer_drops_the_oldest_events_and_counts_them(redis_url, redis_client):
    publisher = MetricsPublisher("redis://127.0.0.1:1/0", keys.events("job"), "t", buffer_limit=3)
    for epoch in range(1, 6):
        publisher.metrics_event("train", epoch, {"loss": 1.0, "lr": 0.1, "epoch_time_s": 1.0, "images": 1,
                                                 "images_per_s": 1.0})
    assert publisher.dropped == 2 and [json.loads(data)["epoch"] for _, data in publisher.buffer] == [3, 4, 5]
    publisher.client = open_redis(redis_url)  # Redis is back
    publisher.close()
    events = [json.loads(fields["data"]) for _, fields in redis_client.xrange(keys.events("job"))]
    assert [event.get("epoch") for event in events[:3]] == [3, 4, 5]
    assert events[-1]["type"] == "trial" and events[-1]["dropped_events"] == 2


def trained_epochs(client, job_id: str) -> int:
    """Epochs whose training figures reached the job's stream."""
    entries = [json.loads(fields["data"]) for _, fields in client.xrange(keys.events(job_id))]
    return sum(1 for entry in entries if entry["type"] == "metrics" and entry["split"] == "train")


@pytest.mark.ray
def test_a_tls_trial_rides_out_a_redis_restart(segq_env, tiny_dataset, tmp_path):
    server, url = tls_redis(tmp_path)
    env = {**segq_env, "SEGQ_REDIS_URL": url}
    try:
        with pytest.raises(redis.exceptions.ConnectionError):  # TLS only: plain Redis clients get nowhere
            redis.Redis(port=server.tls_port, socket_timeout=3).ping()
        waiting = subprocess.Popen(
            [SEGQ, "submit", "sweep", "--data", str(tiny_dataset), "--arch", "unet", "--lr", "1e-3",
             "--epochs", str(EPOCHS), "--workers-per-trial", "2", "--cpus-per-worker", "0.5", "--batch-size", "4",
             "--wait"], env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        client = open_redis(url, decode_responses=True)
        job_id = wait_until(lambda: next(iter(client.zrange(keys.jobs_index(), 0, -1)), None), 60)
        before_outage = wait_until(lambda: trained_epochs(client, job_id), 180)
        server.stop()
        stopped_at = time.monotonic()
        time.sleep(OUTAGE_S)
        assert waiting.poll() is None
        server.start()
        stdout, stderr = waiting.communicate(timeout=300)
        assert waiting.returncode == 0, stdout + stderr
        assert time.monotonic() - stopped_at > OUTAGE_S
        applied = run_segq("aggregator", "--job", job_id, "--once", env=env, check=True)
        assert "error" not in applied.stdout + applied.stderr
        rows = json.loads(run_segq("summary", job_id, "--format", "json", env=env, check=True).stdout)
        assert len(rows) == 1 and rows[0]["status"] == "finished" and rows[0]["dropped_events"] == 0
        assert rows[0]["epochs"] == EPOCHS and len(rows[0]["train_loss"]) == EPOCHS
        assert len(rows[0]["val_miou_curve"]) == EPOCHS
        stored = client.hkeys(keys.trial_metrics(job_id, rows[0]["trial"]))
        every_epoch = {f"1:{epoch}:{split}" for epoch in range(1, EPOCHS + 1) for split in ("train", "val", "best")}
        assert every_epoch <= set(stored)
        # the publisher's buffer replayed what the outage held back, and nothing twice: each epoch's
        # train and val event is in the stream exactly once
        published = [(event["epoch"], event["split"]) for event in metric_events(client, job_id, rows[0]["trial"])
                     if event["split"] in ("train", "val")]
        assert sorted(published) == [(epoch, split) for epoch in range(1, EPOCHS + 1) for split in ("train", "val")]
        assert before_outage < EPOCHS  # Redis went away in the middle of the trial
        assert client.hget(keys.job(job_id), "status") == "finished"  # the record survived the restart (AOF)
    finally:
        if "waiting" in locals() and waiting.poll() is None:
            waiting.kill()
        server.stop()
