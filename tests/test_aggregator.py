import json
import random
import time

import redis

from jobs import keys
from jobs.results.aggregator import DECISIONS, Aggregator
from jobs.records import JobRecord
from jobs.results.summary import trial_rows
from tests.conftest import wait_until
from workers.events import MetricsEvent, decode_event, encode_event
from workers.publisher import MetricsPublisher
from workers.target import Target


def publish_trial(url, job_id, trial, epochs, mious, target=Target()):
    """What rank 0 publishes: facts, then per epoch the train/val/test events and its best decision."""
    publisher = MetricsPublisher(url, keys.events(job_id), trial)
    publisher.trial_event("running", arch="unet", params={"train": {"lr": 0.001}}, workers=2, cpus=1.1, gpus=0)
    publisher.trial_event(num_params=1234, protocol={"ignore_index": 255})
    best = None
    for epoch, miou in zip(range(1, epochs + 1), mious):
        publisher.metrics_event("train", epoch, train_figures(1.0 / epoch, peak=100.0 + epoch))
        for split in ("val", "test"):
            publisher.metrics_event(split, epoch, split_scores(miou, {"bg": miou, "fg": None}))
        if best is None or target.better(miou, best[1]):
            best = (epoch, miou)
        publisher.best_event(1, epoch, best[0], best[1], target)
    # two runs of its Tune function (a pause between them), start-up and evaluation included
    publisher.trial_event(run_segment={"started": 100.0, "seconds": 30.0})
    publisher.trial_event("finished", best_checkpoint="/ckpt", run_segment={"started": 200.0, "seconds": 60.0})
    publisher.close()


def train_figures(loss, peak=100.0):
    return {"loss": loss, "lr": 0.001, "epoch_time_s": 2.0, "images": 10, "images_per_s": 5.0, "peak_memory_mb": peak}


def split_scores(miou, per_class):
    return {"miou": miou, "pixel_acc": 0.9, "mean_acc": 0.8, "mdice": 0.7, "fwiou": 0.6, "per_class_iou": per_class}


def state(client, job_id):
    rows = trial_rows(client, job_id)
    board = client.zrange(keys.leaderboard(job_id), 0, -1, withscores=True)
    return json.dumps(rows, sort_keys=True), board


def test_summary_fields_and_replay_is_idempotent(redis_url, redis_client):
    JobRecord(id="job", kind="sweep", spec={}).save(redis_client)
    publish_trial(redis_url, "job", "000_unet", 3, [0.2, 0.5, 0.4])
    publish_trial(redis_url, "job", "001_unet", 2, [0.1, 0.3])
    assert Aggregator(redis_client, "job").drain() == 2 * 4 + (3 + 2) * 4
    first = state(redis_client, "job")
    rows = json.loads(first[0])
    row = rows[0]
    assert row["trial"] == "000_unet" and row["status"] == "finished" and row["epochs"] == 3
    assert row["best_epoch"] == 2 and row["val"]["miou"] == 0.5 and row["test"]["miou"] == 0.5
    assert row["val"]["per_class_iou"] == {"bg": 0.5, "fg": None}
    assert row["train_time_s"] == 6.0 and row["images_per_s"] == 5.0 and row["num_params"] == 1234
    # device-hours: the CPUs the trial held x the wall time of its runs (90 s), GPUs apart
    assert row["cost"]["peak_memory_mb"] == 103.0 and row["wall_time_s"] == 90.0
    assert row["cost"]["cpu_hours"] == row["cost"]["device_hours"] == round(90 * 1.1 / 3600, 6)
    assert row["cost"]["gpu_hours"] == 0
    assert first[1] == [("001_unet", 0.3), ("000_unet", 0.5)]

    # Replay the whole stream through a fresh group: nothing changes.
    redis_client.xgroup_destroy(keys.events("job"), keys.AGGREGATOR_GROUP)
    assert Aggregator(redis_client, "job").drain() == 28
    assert state(redis_client, "job") == first


def test_unacked_entries_are_read_again_after_a_crash(redis_url, redis_client):
    JobRecord(id="job", kind="sweep", spec={}).save(redis_client)
    publish_trial(redis_url, "job", "000_unet", 2, [0.2, 0.5])
    aggregator = Aggregator(redis_client, "job")
    aggregator.ensure_group()
    # A crash after reading and before applying/acking: entries sit in the pending list.
    redis_client.xreadgroup(keys.AGGREGATOR_GROUP, aggregator.consumer, {keys.events("job"): ">"}, count=4)
    assert redis_client.xpending(keys.events("job"), keys.AGGREGATOR_GROUP)["pending"] == 4
    restarted = Aggregator(redis_client, "job")
    assert restarted.drain() == 4 + 4 * 2
    assert redis_client.xpending(keys.events("job"), keys.AGGREGATOR_GROUP)["pending"] == 0
    reference = redis.Redis.from_url(redis_url, decode_responses=True)
    rows = trial_rows(reference, "job")
    assert rows[0]["epochs"] == 2 and rows[0]["val"]["miou"] == 0.5


def test_publisher_buffers_while_redis_is_unreachable(redis_url, redis_client):
    publisher = MetricsPublisher("redis://127.0.0.1:1/0", keys.events("job"), "t")  # nothing listens on port 1
    publisher.metrics_event("train", 1, train_figures(1.0))
    time.sleep(1.0)  # the sender tried and failed at least once
    assert len(publisher.buffer) == 1
    publisher.client = redis.Redis.from_url(redis_url)  # Redis is back
    publisher.metrics_event("train", 2, train_figures(0.5))
    wait_until(lambda: not publisher.buffer, timeout=15)
    publisher.close()
    events = [json.loads(fields["data"]) for _, fields in redis_client.xrange(keys.events("job"))]
    assert [(e["epoch"], e["metrics"]["loss"]) for e in events] == [(1, 1.0), (2, 0.5)]


def test_per_class_scores_keep_the_class_order(redis_url, redis_client):
    JobRecord(id="job", kind="sweep", spec={}).save(redis_client)
    publisher = MetricsPublisher(redis_url, keys.events("job"), "t")
    publisher.metrics_event("train", 1, train_figures(1.0))
    publisher.metrics_event("val", 1, split_scores(0.5, {"sky": 0.1, "road": 0.9, "car": 0.5}))
    publisher.best_event(1, 1, 1, 0.5, Target())
    publisher.close()
    Aggregator(redis_client, "job").drain()
    assert list(trial_rows(redis_client, "job")[0]["val"]["per_class_iou"]) == ["sky", "road", "car"]


def rows_and_board(client, job_id):
    rows = [{name: value for name, value in row.items() if name != "job"} for row in trial_rows(client, job_id)]
    return json.dumps(rows, sort_keys=True), client.zrange(keys.leaderboard(job_id), 0, -1, withscores=True)


def deliver(client, source, job_id, entries, batch):
    """The entries of job `source`'s stream (copied, ids and all, to job_id's), applied in the given order in
    batches of `batch`, by a consumer that read them all."""
    JobRecord(id=job_id, kind="sweep", spec={}).save(client)
    for entry_id, fields in client.xrange(keys.events(source)):
        client.xadd(keys.events(job_id), fields, id=entry_id)
    aggregator = Aggregator(client, job_id)
    aggregator.ensure_group()
    client.xreadgroup(keys.AGGREGATOR_GROUP, aggregator.consumer, {keys.events(job_id): ">"})
    for start in range(0, len(entries), batch):
        aggregator.apply(aggregator.parse(entries[start:start + batch]))
    assert client.xpending(keys.events(job_id), keys.AGGREGATOR_GROUP)["pending"] == 0


def test_any_order_and_batching_of_the_entries_gives_the_same_state(redis_url, redis_client):
    JobRecord(id="job", kind="sweep", spec={}).save(redis_client)
    publish_trial(redis_url, "job", "000_unet", 4, [0.2, 0.5, 0.4, 0.45])
    publish_trial(redis_url, "job", "001_unet", 3, [0.1, 0.3, 0.6])
    publisher = MetricsPublisher(redis_url, keys.events("job"), "001_unet")
    publisher.best_event(2, 1, 1, 0.7, Target())  # a second iteration: the leaderboard takes the best of both
    publisher.best_event(2, 2, 1, 0.7, Target())
    publisher.close()
    redis_client.xadd(keys.events("job"), {"data": "not an event"})
    Aggregator(redis_client, "job").drain()
    reference = rows_and_board(redis_client, "job")
    assert reference[1] == [("000_unet", 0.5), ("001_unet", 0.7)]
    entries = redis_client.xrange(keys.events("job"))
    shuffle = random.Random(0)
    for attempt in range(6):
        copy = f"copy-{attempt}"
        deliver(redis_client, "job", copy, shuffle.sample(entries, len(entries)), shuffle.choice([1, 3, 10, 500]))
        assert rows_and_board(redis_client, copy) == reference
    # ... and replaying them all once more changes nothing
    redis_client.xgroup_destroy(keys.events(copy), keys.AGGREGATOR_GROUP)
    assert Aggregator(redis_client, copy).drain() == len(entries)
    assert rows_and_board(redis_client, copy) == reference


def test_decisions_are_seeded_from_a_trial_aggregated_before_they_were_kept(redis_url, redis_client):
    JobRecord(id="job", kind="saliency", spec={}).save(redis_client)
    publisher = MetricsPublisher(redis_url, keys.events("job"), "t")
    publisher.best_event(1, 1, 1, 0.8, Target())
    publisher.best_event(1, 2, 1, 0.8, Target())
    publisher.close()
    Aggregator(redis_client, "job").drain()
    # An aggregator of before the decisions were kept apart left them only in the metrics hash.
    redis_client.hdel(keys.trial("job", "t"), DECISIONS)
    publisher = MetricsPublisher(redis_url, keys.events("job"), "t")
    publisher.best_event(2, 1, 1, 0.3, Target())
    publisher.close()
    Aggregator(redis_client, "job").drain()
    assert redis_client.zscore(keys.leaderboard("job"), "t") == 0.8  # iteration 1's, not only iteration 2's
    assert json.loads(redis_client.hget(keys.trial("job", "t"), DECISIONS)) == {
        "1": {"epoch": 2, "value": 0.8}, "2": {"epoch": 1, "value": 0.3}}


def test_metrics_decode_as_the_model_their_fields_name():
    """Training figures and split scores are told apart by the contract's discriminator (a field only
    training figures have), whatever the split: each round-trips as itself; broken ones do not decode."""
    scores = split_scores(0.5, {"bg": 0.5, "fg": None})
    for split, metrics in (("train", train_figures(1.0)), ("val", scores), ("test", scores), ("val", train_figures(1.0))):
        event = MetricsEvent(trial="t", epoch=1, split=split, metrics=metrics)
        decoded = decode_event(encode_event(event))
        assert decoded == event and type(decoded.metrics) is type(event.metrics)
    for broken in ('{"type": "metrics", "trial": "t", "epoch": 1, "split": "val", "metrics": {"miou": 0.5}}',
                   '{"type": "metrics", "trial": "t", "epoch": 1, "split": "train", "metrics": {"loss": 1.0}}',
                   '{"split": "val"}', "not JSON"):
        assert decode_event(broken) is None, broken
