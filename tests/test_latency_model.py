"""The recorded order latency model (hean.stages.latency), hand-computed: interpolation at the send and
report times, the ends held, FIFO order kept on a venue, and every malformed file refused naming the file and
the row."""

from __future__ import annotations

import numpy as np
import pytest
from test_venue import OUT, book5, order, reports, send

from hean.records import BUY, TimeInForce
from hean.stages.latency import latency_tables, load_round_trips, recorded_latency
from hean.stages.venue import make_venue, venue_poll

# (req_ts, exch_ts, resp_ts): entry latencies 100, 300, 100 at sends 0, 1000, 2000; response latencies 50,
# 100, 400 at exchange times 100, 1300, 2100
ROWS = [(0, 100, 150), (1000, 1300, 1400), (2000, 2100, 2500)]


def _csv(tmp_path, rows, header="req_ts,exch_ts,resp_ts", name="rtt.csv"):
    path = tmp_path / name
    path.write_text(header + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize(
    ("t", "entry"),
    [(-5, 100), (0, 100), (500, 200), (999, 299), (1000, 300), (1500, 200), (1999, 100), (2000, 100), (9000, 100)],
)
def test_entry_latency_is_interpolated_in_send_order(tmp_path, t, entry):
    tab, _, rows = latency_tables([_csv(tmp_path, ROWS)])
    assert recorded_latency(tab[0], rows[0], t) == entry


@pytest.mark.parametrize(("t", "response"), [(0, 50), (100, 50), (700, 75), (1300, 100), (1700, 250), (3000, 400)])
def test_response_latency_is_interpolated_in_exchange_time_order(tmp_path, t, response):
    _, tab, rows = latency_tables([_csv(tmp_path, ROWS)])
    assert recorded_latency(tab[0], rows[0], t) == response


def test_response_rows_are_sorted_by_exchange_time(tmp_path):
    """Sent in this order, stamped by the exchange in the other: the response table follows exchange time."""
    _, tab, rows = latency_tables([_csv(tmp_path, [(0, 500, 510), (10, 20, 120)])])
    assert tab[0, : rows[0]].tolist() == [[20, 100], [500, 10]]


def test_venues_without_a_file_keep_their_constant_latencies(tmp_path):
    vn = make_venue(1, 2, latency_file=np.array(["", _csv(tmp_path, ROWS)], dtype=object), entry_latency_ns=7)
    assert vn.lat_rows.tolist() == [0, 3]
    assert vn.lat_entry.shape == (2, 3, 2)


def test_an_order_arrives_after_its_recorded_entry_latency(tmp_path):
    vn = book5(latency_file=_csv(tmp_path, ROWS))
    assert send(vn, order(price=101, qty=1, tif=TimeInForce.IOC), now=500) == []  # arrives at 700
    assert reports(OUT, venue_poll(vn, 699, OUT, 0)) == []
    venue_poll(vn, 700, OUT, 0)  # matched at 700; reports made at 700 wait 75 ns
    assert reports(OUT, venue_poll(vn, 774, OUT, 0)) == []
    assert [r[0] for r in reports(OUT, venue_poll(vn, 775, OUT, 0))] == ["ACK", "FILL"]
    assert OUT[0]["ts_venue"] == 700


def test_a_later_order_never_overtakes_an_earlier_one(tmp_path):
    """Entry 1000 ns for a send at 0, 10 ns for a send at 10: the second order would arrive at 20, before the
    first (1000); one connection keeps them in order, so it arrives at 1000 too, after the first."""
    vn = book5(latency_file=_csv(tmp_path, [(0, 1000, 1000), (10, 20, 20)]))
    first = order(side=BUY, price=90, qty=1)
    second = order(side=BUY, price=91, qty=1)
    send(vn, first, now=0)
    send(vn, second, now=10)
    assert reports(OUT, venue_poll(vn, 999, OUT, 0)) == []
    n = venue_poll(vn, 1000, OUT, 0)  # both arrive at 1000: acks made then, released at once (latency 0)
    assert [int(r["order_id"]) for r in OUT[:n]] == [int(first["order_id"]), int(second["order_id"])]
    assert [int(r["ts_venue"]) for r in OUT[:n]] == [1000, 1000]


BAD = [
    ("req_ts,exch_ts\n1,2\n", "missing resp_ts"),
    ("req_ts,exch_ts,resp_ts\n", "1..10,000,000 round trips needed, got 0"),
    ("req_ts,exch_ts,resp_ts\n0,10,20\n5,4,20\n", "line 3: exch_ts - req_ts = -1 ns"),
    ("req_ts,exch_ts,resp_ts\n0,10,9\n", "line 2: resp_ts - exch_ts = -1 ns"),
    ("req_ts,exch_ts,resp_ts\n10,20,30\n0,10,20\n", "line 3: req_ts goes back in time"),
    ("req_ts,exch_ts,resp_ts\n0,1,2\n0,1.5,2\n", "line 3: not integer ns"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_a_malformed_file_is_refused_naming_the_row(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=str(path)) as e:
        load_round_trips(path)
    assert message in str(e.value)


def test_hftbacktest_npz_files_load_as_they_are(tmp_path):
    dt = np.dtype([("req_ts", "<i8"), ("exch_ts", "<i8"), ("resp_ts", "<i8"), ("_padding", "<i8")])
    arr = np.array([(r[0], r[1], r[2], 0) for r in ROWS], dt)
    np.savez(tmp_path / "lat.npz", data=arr)
    assert load_round_trips(tmp_path / "lat.npz").tolist() == [list(r) for r in ROWS]


def test_a_missing_file_and_a_wrong_count_are_config_errors(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        make_venue(1, latency_file=str(tmp_path / "none.csv"))
    with pytest.raises(ValueError, match="one path or one per venue"):
        make_venue(1, 3, latency_file=np.array(["a", "b"], dtype=object))
