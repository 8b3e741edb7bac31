"""Gallery page: register people, list them, add photos of them, delete them."""

from __future__ import annotations

from typing import Any

import streamlit as st

from facegate.ui.client import Upload
from facegate.ui.widgets import IMAGE_TYPES, api, call, counted, flash, show_flash

# The API's 409 says the name is taken; say what to do about it.
_DUPLICATE_HINT = {409: "Pick another name, or add the photo to that person below"}


def register_form() -> None:
    with st.form("register", clear_on_submit=True):
        st.subheader("Register a person")
        name = st.text_input("Name", max_chars=200).strip()
        photo = st.file_uploader("Photo with exactly one face", type=IMAGE_TYPES, key="register-photo")
        if not st.form_submit_button("Register"):
            return
    if not name or photo is None:
        st.warning("Enter a name and choose a photo.")
        return
    answer = call(
        f"Registering {name}…",
        lambda: api().register(name, Upload(photo.name, photo.getvalue())),
        failure=f"Could not register {name}",
        hints=_DUPLICATE_HINT,
    )
    if answer is not None:
        flash(f"Registered {answer['name']} (id {answer['user_id']}).")


def user_label(user: dict[str, Any]) -> str:
    return f"{user['name']} (id {user['id']})"


def add_photo(user: dict[str, Any]) -> None:
    photo = st.file_uploader(f"Another photo of {user['name']}", type=IMAGE_TYPES, key="add-photo")
    if st.button("Add photo", disabled=photo is None) and photo is not None:
        answer = call(
            "Adding the photo…",
            lambda: api().add_face(user["id"], Upload(photo.name, photo.getvalue())),
            failure=f"Could not add the photo of {user['name']}",
        )
        if answer is not None:
            flash(f"{user['name']} now has {answer['face_count']} photos.")


def delete_user(user: dict[str, Any]) -> None:
    # Keyed by id: a confirmation given for one person must not carry over to the next one listed.
    sure = st.checkbox(f"Yes, delete {user['name']} and all their photos", key=f"confirm-delete-{user['id']}")
    if not st.button("Delete", type="primary", disabled=not sure):
        return
    if call("Deleting…", lambda: api().delete_user(user["id"]), failure="Could not delete") is not None:
        flash(f"Deleted {user['name']}.")


def user_table(users: list[dict[str, Any]]) -> None:
    st.subheader(counted(len(users), "registered person", "registered people"))
    if users:
        rows = [{"id": u["id"], "name": u["name"], "photos": u["face_count"]} for u in users]
        st.dataframe(rows, hide_index=True)


st.title("Gallery")
show_flash()
users = call("Loading the gallery…", lambda: api().users(), failure="Could not load the gallery")
if users is not None:
    user_table(users)
register_form()
if users:
    st.subheader("Manage a person")
    chosen = st.selectbox("Person", users, format_func=user_label, key="manage-user")
    if chosen is not None:
        add_column, delete_column = st.columns(2)
        with add_column:
            add_photo(chosen)
        with delete_column:
            delete_user(chosen)
