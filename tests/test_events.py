"""The event contract and the one rule for "best"."""
import json

import pytest
from pydantic import ValidationError

from jobs import keys
from jobs.results.aggregator import Aggregator
from jobs.records import JobRecord
from jobs.results.summary import trial_rows
from tests.test_aggregator import publish_trial
from workers.events import BestEvent, MetricsEvent, SplitScores, TrainMetrics, decode_event, encode_event
from workers.target import Target


def test_ties_keep_the_earliest_and_missing_is_never_better():
    target = Target()
    assert target.best([(1, 0.5), (2, 0.5), (3, 0.4)]) == (1, 0.5)
    assert target.best([(1, None), (2, 0.0), (3, None)]) == (2, 0.0)  # 0.0 is a score
    assert target.best([(1, None)]) == (1, None)
    assert target.best([]) is None
    assert not target.better(None, None) and target.better(0.0, None) and not target.better(0.3, 0.3)


def test_min_mode_and_ranking():
    loss = Target(metric="train_loss", mode="min")
    assert loss.best([(1, 0.9), (2, 0.4), (3, 0.4)]) == (2, 0.4)
    assert loss.value_of({"train": {"loss": 0.7}}) == 0.7
    assert Target().ranked([("a", 0.2), ("b", None), ("c", 0.5), ("d", 0.5)]) == ["c", "d", "a", "b"]
    assert loss.ranked([("a", 0.2), ("b", None), ("c", 0.1)]) == ["c", "a", "b"]


def test_unknown_metric_is_refused_with_the_valid_names():
    with pytest.raises(ValidationError, match="unknown metric 'val_nothing'; valid: val_miou"):
        Target(metric="val_nothing")


def test_events_round_trip_and_typed_payloads():
    train = MetricsEvent(trial="t", epoch=1, split="train",
                         metrics={"loss": 1.0, "lr": 0.1, "epoch_time_s": 1.0, "images": 4, "images_per_s": 4.0})
    val = MetricsEvent(trial="t", epoch=1, split="val",
                       metrics={"miou": 0.5, "mdice": 0.6, "pixel_acc": 0.9, "mean_acc": 0.7, "fwiou": 0.8})
    assert isinstance(decode_event(encode_event(train)).metrics, TrainMetrics)
    assert isinstance(decode_event(encode_event(val)).metrics, SplitScores)
    best = decode_event(encode_event(BestEvent(trial="t", epoch=2, best_epoch=1, value=0.5, metric="val_miou",
                                               mode="max")))
    assert best.target == Target()


@pytest.mark.parametrize("data", ["not json", json.dumps({"type": "metrics", "trial": "t"}),
                                  json.dumps({"type": "trial", "trial": "t", "colour": "red"}),
                                  json.dumps({"type": "gossip", "trial": "t"})])
def test_entries_that_break_the_contract_are_acknowledged_without_applying(redis_client, data):
    JobRecord(id="job", kind="sweep", spec={}).save(redis_client)
    redis_client.xadd(keys.events("job"), {"data": data})
    assert Aggregator(redis_client, "job").drain() == 1
    assert redis_client.xpending(keys.events("job"), keys.AGGREGATOR_GROUP)["pending"] == 0
    assert trial_rows(redis_client, "job") == []


def test_the_summary_reports_rank_zeros_decision(redis_url, redis_client):
    # A tie at 0.5 (epochs 2 and 3): rank 0 keeps epoch 2, and so do the summary and the leaderboard.
    JobRecord(id="job", kind="sweep", spec={}).save(redis_client)
    publish_trial(redis_url, "job", "000_unet", 4, [0.0, 0.5, 0.5, 0.1])
    Aggregator(redis_client, "job").drain()
    row = trial_rows(redis_client, "job")[0]
    assert row["best_epoch"] == 2 and row["best_value"] == 0.5 and row["val"]["miou"] == 0.5
    assert row["target"] == {"metric": "val_miou", "mode": "max"}
    assert redis_client.zscore(keys.leaderboard("job"), "000_unet") == 0.5


def test_a_restored_epochs_events_are_published_only_if_the_stream_lacks_them(redis_url, redis_client):
    """A restart publishes its restored checkpoint's events unless the process that stored the
    checkpoint sent them: every (epoch, split) stays in the stream once."""
    from workers.publisher import MetricsPublisher

    stream = keys.events("job")
    events = [encode_event(MetricsEvent(trial="t", epoch=epoch, split="train", metrics=TrainMetrics(
        loss=1.0, lr=0.1, epoch_time_s=1.0, images=4, images_per_s=4.0))) for epoch in (1, 2)]
    first = MetricsPublisher(redis_url, stream, "t")
    first.publish_encoded(events[:1])  # epoch 1 was sent; epoch 2's checkpoint was stored, its events not
    first.close()
    redis_client.xadd(stream, {"data": encode_event(MetricsEvent(trial="other", epoch=1, split="val", metrics=SplitScores(
        pixel_acc=0.5, mean_acc=0.5, miou=0.5, mdice=0.5, fwiou=0.5)))})
    restarted = MetricsPublisher(redis_url, stream, "t")
    assert restarted.publish_unless_sent(events) == 1
    restarted.close()
    again = MetricsPublisher(redis_url, stream, "t")
    assert again.publish_unless_sent(events) == 0
    again.close()
    sent = [fields["data"] for _, fields in redis_client.xrange(stream) if '"trial":"t"' in fields["data"]]
    assert sent == events
