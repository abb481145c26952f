"""The shared values: one JSON codec for reports (their purity: test_isolation.py)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from mxsend.model import (
    FailureKind,
    RecipientReport,
    TLSInfo,
    report_from_json,
    report_to_json,
)
from mxsend.protocol import EnhancedStatus, Reply, Status

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
replies = st.builds(
    Reply,
    st.integers(200, 559),
    st.lists(text, min_size=1, max_size=3).map(tuple),
    st.sampled_from([None, EnhancedStatus(2, 0, 0), EnhancedStatus(5, 1, 1)]),
    st.booleans(),
)
tls = st.none() | st.builds(TLSInfo, st.none() | text, st.none() | text, st.booleans(), text)
reports = st.builds(
    RecipientReport,
    text,
    st.sampled_from(Status),
    replies,
    st.none() | text,
    st.none() | text,
    tls,
    st.booleans(),
    st.integers(0, 10),
    st.integers(0, 10**6).map(lambda ms: ms / 1000),
    st.none() | st.sampled_from(FailureKind),
)


@given(reports)
def test_reports_round_trip_through_json(report: RecipientReport) -> None:
    document = json.loads(json.dumps(report_to_json(report)))
    assert report_from_json(document) == report


def test_the_json_form_keeps_the_fields_people_read() -> None:
    reply = Reply.synthesized(451, "4.3.0", "the message content changed")
    report = RecipientReport("bob@example.net", Status.DEFERRED, reply, failure=FailureKind.CONTENT)
    document = report_to_json(report)
    assert document["reply"] == "4.3.0 the message content changed"
    assert (document["code"], document["enhanced"], document["failure"]) == (
        451,
        "4.3.0",
        "content",
    )
