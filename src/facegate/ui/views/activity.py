"""Activity page: the access log (who was recognised, who was turned away and why) and the unknown
visitors to enrol, add to someone, or forget."""

from __future__ import annotations

from datetime import UTC, datetime, time
from functools import partial
from typing import Any

import streamlit as st

from facegate.ui.widgets import api, call, change, collection, counted, show_flash

STATUSES = {"every decision": None, "matches": "match", "no match": "no_match", "not searched": "low_quality"}
THUMBNAILS = 12  # faces shown above the table, newest first
THUMBNAIL_WIDTH = 96


def why(event: dict[str, Any]) -> str:
    """The decision in words: who, or why no one."""
    if event["status"] == "match":
        return f"{event['user_name']} (similarity {event['similarity']:.2f})"
    if event["status"] == "low_quality":
        return f"not searched: {event['quality']}"
    visitor = f", unknown visitor #{event['visitor_id']}" if event["visitor_id"] else ""
    if event["distance"] is None:
        return f"no one: the collection was empty{visitor}"
    nearest, threshold = event["distance"], event["threshold"]
    return f"no one within the threshold (nearest at {nearest:.3f} > {threshold:.3f}){visitor}"


def event_rows(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "time": datetime.fromisoformat(e["at"]).astimezone().strftime("%Y-%m-%d %H:%M:%S"),
            "status": e["status"],
            "decision": why(e),
            "source": e["source"],
            "key": e["key_name"],
            "id": e["id"],
        }
        for e in events
    ]


def thumbnails(events: list[dict[str, Any]]) -> None:
    with_faces = [e for e in events if e["has_face"]][:THUMBNAILS]
    if not with_faces:
        st.caption("No faces stored (EVENTS=decisions keeps none; EVENTS=faces keeps each face's chip).")
        return
    columns = st.columns(min(len(with_faces), 6))
    for index, event in enumerate(with_faces):
        face = call("Loading a face…", partial(api().event_face, event["id"]))
        if face is not None:
            columns[index % len(columns)].image(
                face, width=THUMBNAIL_WIDTH, caption=f"#{event['id']} {event['status']}"
            )


def activity(where: str) -> None:
    st.subheader("Access log")
    status_column, since_column = st.columns(2)
    status = STATUSES[status_column.selectbox("Show", list(STATUSES), key="activity-status")]
    day = since_column.date_input("Since", value=None, key="activity-since")
    since = None if day is None else datetime.combine(day, time(), tzinfo=UTC).isoformat()
    events = call(
        "Loading the access log…",
        lambda: api().events(where, status, since),
        failure="Cannot read the access log",
    )
    if events is None:
        return
    st.caption(
        counted(len(events), "event") + " (newest first; at most 200 here: `facegate events --csv` has all)"
    )
    thumbnails(events)
    if events:
        st.dataframe(event_rows(events), hide_index=True)


def visitor(entry: dict[str, Any], people: dict[int, str], where: str) -> None:
    """One unknown visitor: their best face, how often they came, and what to do with them."""
    number = entry["id"]
    seen = datetime.fromisoformat(entry["first_seen"]).astimezone().strftime("%Y-%m-%d %H:%M")
    face_column, act_column = st.columns([1, 3])
    face = call("Loading a face…", lambda: api().visitor_face(number, where))
    if face is not None:
        face_column.image(face, width=THUMBNAIL_WIDTH)
    with act_column:
        st.markdown(f"**Unknown visitor #{number}**: {counted(entry['visits'], 'visit')} since {seen}")
        name = st.text_input("Name", key=f"visitor-name-{number}", max_chars=200).strip()
        if st.button("Enrol", key=f"visitor-enrol-{number}") and name:
            change(
                "Enrolling…",
                lambda: api().enrol_visitor(number, name, where),
                lambda answer: (
                    f"Enrolled unknown visitor #{number} as {name} "
                    f"({counted(answer['faces_added'], 'face')})."
                ),
                failure=f"Could not enrol visitor #{number}",
            )
        target = st.selectbox(
            "Add to", list(people), index=None, format_func=people.__getitem__, key=f"visitor-target-{number}"
        )
        if st.button("Add to this person", key=f"visitor-add-{number}") and target is not None:
            change(
                "Adding…",
                lambda: api().add_visitor_to(number, target, where),
                lambda answer: f"Added unknown visitor #{number} to {people[target]}.",
                failure=f"Could not add visitor #{number}",
            )
        if st.button("Forget", key=f"visitor-forget-{number}"):
            change(
                "Forgetting…",
                lambda: api().forget_visitor(number, where),
                lambda _: f"Forgot unknown visitor #{number} and their faces.",
                failure=f"Could not forget visitor #{number}",
            )


def unknown_visitors(where: str) -> None:
    st.subheader("Unknown visitors")
    visitors = call(
        "Loading the unknown visitors…", lambda: api().visitors(where), failure="Cannot list them"
    )
    if not visitors:
        st.caption("No unknown visitors (they are grouped only with EVENTS=faces).")
        return
    users = call("Loading the gallery…", lambda: api().users(where)) or []
    people = {user["id"]: f"{user['name']} (id {user['id']})" for user in users}
    for entry in visitors:
        with st.container(border=True):
            visitor(entry, people, where)


st.title("Activity")
where = collection()
st.caption(f"Collection {where} (choose another in the sidebar)")
show_flash()
activity(where)
unknown_visitors(where)
