"""Gallery page: register people, list them, add photos of them, delete them.

Every input that leads to a change is bound to what it was chosen for: the photo in "Another photo
of A" lives in an uploader keyed by A's id (choosing B shows B's own, empty uploader), and inputs are
emptied only once the API has accepted them (`widgets.change`), so a second click cannot store the
same photo twice, and a refused name or photo stays to be corrected instead of entered again.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from facegate.ui.client import Upload
from facegate.ui.widgets import IMAGE_TYPES, api, call, change, counted, fresh_key, show_flash

# The API's 409 says the name is taken; say what to do about it.
_DUPLICATE_HINT = {409: "Pick another name, or add the photo to that person below"}
REGISTER = "register"
ADD_PHOTO = "add-photo"


def missing_input(name: str, has_photo: bool) -> str:
    """What the register form still needs, in words ("" when nothing is missing)."""
    if not name:
        return "Enter a name." if has_photo else "Enter a name and choose a photo."
    return "" if has_photo else "Choose a photo."


def register_form() -> None:
    with st.form(REGISTER):
        st.subheader("Register a person")
        name = st.text_input("Name", max_chars=200, key=fresh_key(REGISTER) + "-name").strip()
        photo = st.file_uploader(
            "Photo with exactly one face", type=IMAGE_TYPES, key=fresh_key(REGISTER) + "-photo"
        )
        if not st.form_submit_button("Register"):
            return
    if photo is None or not name:
        st.warning(missing_input(name, photo is not None), icon=":material/warning:")
        return
    upload = Upload(photo.name, photo.getvalue())
    change(
        f"Registering {name}…",
        lambda: api().register(name, upload),
        lambda answer: f"Registered {answer['name']} (id {answer['user_id']}).",
        clears=REGISTER,
        failure=f"Could not register {name}",
        hints=_DUPLICATE_HINT,
        photo=upload,
    )


def user_label(user: dict[str, Any]) -> str:
    return f"{user['name']} (id {user['id']})"


def add_photo(user: dict[str, Any]) -> None:
    # Keyed by id: a photo chosen for one person is never offered to another one.
    key = f"{fresh_key(ADD_PHOTO)}-{user['id']}"
    photo = st.file_uploader(f"Another photo of {user['name']}", type=IMAGE_TYPES, key=key)
    if not st.button("Add photo", disabled=photo is None, key=f"{key}-button") or photo is None:
        return
    upload = Upload(photo.name, photo.getvalue())
    change(
        "Adding the photo…",
        lambda: api().add_face(user["id"], upload),
        lambda answer: f"{user['name']} now has {counted(answer['face_count'], 'photo')}.",
        clears=ADD_PHOTO,
        failure=f"Could not add the photo of {user['name']}",
        photo=upload,
    )


def delete_user(user: dict[str, Any]) -> None:
    # Keyed by id: a confirmation given for one person must not carry over to the next one listed.
    sure = st.checkbox(f"Yes, delete {user['name']} and all their photos", key=f"confirm-delete-{user['id']}")
    if st.button("Delete", type="primary", disabled=not sure, key=f"delete-{user['id']}"):
        change(
            "Deleting…",
            lambda: api().delete_user(user["id"]),
            lambda _: f"Deleted {user['name']}.",
            failure="Could not delete",
        )


def user_table(users: list[dict[str, Any]]) -> None:
    st.subheader(counted(len(users), "registered person", "registered people"))
    if users:
        rows = [{"id": u["id"], "name": u["name"], "photos": u["face_count"]} for u in users]
        st.dataframe(rows, hide_index=True)


def manage(users: list[dict[str, Any]]) -> None:
    """Add a photo to, or delete, the person chosen; nobody is chosen until the user picks one."""
    st.subheader("Manage a person")
    by_id = {user["id"]: user for user in users}
    # The options are ids, not the users' records: a record changes with its photo count, an id
    # does not. A deleted person's id is no longer an option, so the choice goes back to nobody
    # instead of jumping to the next person.
    chosen = st.selectbox(
        "Person",
        list(by_id),
        index=None,
        format_func=lambda user_id: user_label(by_id[user_id]),
        placeholder="Choose a person",
        key="manage-user",
    )
    if chosen is None:
        st.caption("Choose a person to add a photo of them or to delete them.")
        return
    add_column, delete_column = st.columns(2)
    with add_column:
        add_photo(by_id[chosen])
    with delete_column:
        delete_user(by_id[chosen])


st.title("Gallery")
show_flash()
users = call("Loading the gallery…", lambda: api().users(), failure="Could not load the gallery")
if users is not None:
    user_table(users)
register_form()
if users:
    manage(users)
