"""Gallery page: the chosen collection's people: register, list, rename and delete them, add photos
of them, list and delete their photos one by one.

Every input that leads to a change is bound to what it was chosen for: the photo in "Another photo
of A" lives in an uploader keyed by A's id (choosing B shows B's own, empty uploader), and inputs are
emptied only once the API has accepted them (`widgets.change`), so a second click cannot store the
same photo twice, and a refused name or photo stays to be corrected instead of entered again.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import streamlit as st

from facegate.ui.client import ApiError, Upload
from facegate.ui.widgets import IMAGE_TYPES, api, call, change, collection, counted, fresh_key, show_flash

# The API's 409 says the name is taken, or names the person the face already belongs to; say what
# to do about it.
_DUPLICATE_HINT = {
    409: "Pick another name, or add the photo to that person below; for a look-alike, tick "
    "Register anyway and register again"
}
REGISTER = "register"
ADD_PHOTO = "add-photo"
# The refusals an override can lift: a photo that is not the person it is added to (422; also a
# photo without exactly one face, which forcing cannot change), a face already someone's (409; also
# a name taken, which allow_duplicate cannot change).
NOT_THE_PERSON = 422
DUPLICATE = 409
T = TypeVar("T")
REGISTER_ANYWAY = "Register anyway: a different person who looks alike (a twin, say)"


def missing_input(name: str, has_photo: bool) -> str:
    """What the register form still needs, in words ("" when nothing is missing)."""
    if not name:
        return "Enter a name." if has_photo else "Enter a name and choose a photo."
    return "" if has_photo else "Choose a photo."


def register_form(where: str) -> None:
    """The register form; after the API refused its photo as someone's already, a box to register
    it anyway (a twin): offered for that photo only, never by default."""
    key = fresh_key(REGISTER)
    form = st.form(REGISTER)
    with form:
        st.subheader("Register a person")
        name = st.text_input("Name", max_chars=200, key=f"{key}-name").strip()
        photo = st.file_uploader("Photo with exactly one face", type=IMAGE_TYPES, key=f"{key}-photo")
        face = st.number_input(
            "Which face, in a photo of several",
            min_value=0,
            max_value=999,
            value=None,
            step=1,
            key=f"{key}-face",
            help="Its number in the Detect page's table of the same photo (the first is 0). Empty: the "
            "photo must hold one face.",
        )
        submitted = st.form_submit_button("Register")
    upload = None if photo is None else Upload(photo.name, photo.getvalue())
    if submitted:
        register(name, upload, where, key, None if face is None else int(face))
    # After the button, so that it shows in the run that refused (a form's widgets send their
    # values with its button).
    if upload is not None and refused(key, upload, DUPLICATE):
        form.checkbox(REGISTER_ANYWAY, key=f"{key}-anyway")


def register(name: str, upload: Upload | None, where: str, key: str, face: int | None = None) -> None:
    if upload is None or not name:
        st.warning(missing_input(name, upload is not None), icon=":material/warning:")
        return
    allow_duplicate = anyway(key, upload, DUPLICATE)
    change(
        f"Registering {name}…",
        noting_refusal(
            key, upload, DUPLICATE, lambda: api().register(name, upload, where, allow_duplicate, face)
        ),
        lambda answer: f"Registered {answer['name']} (id {answer['user_id']}).",
        clears=REGISTER,
        failure=f"Could not register {name}",
        hints=_DUPLICATE_HINT,
        photo=upload,
    )


def refused(key: str, upload: Upload, status: int) -> bool:
    """Whether the API refused this very photo with `status` for the input `key`."""
    return bool(st.session_state.get(f"{key}-refused-{status}") == upload.digest())


def anyway(key: str, upload: Upload, status: int) -> bool:
    """Whether the user asked to send the refused photo again with the API's override."""
    return refused(key, upload, status) and bool(st.session_state.get(f"{key}-anyway"))


def noting_refusal(key: str, upload: Upload, status: int, request: Callable[[], T]) -> Callable[[], T]:
    """`request`, noting it when the API refuses `upload` with `status` (see `refused`)."""

    def sent() -> T:
        try:
            return request()
        except ApiError as exc:
            if exc.status == status:
                st.session_state[f"{key}-refused-{status}"] = upload.digest()
            raise

    return sent


def user_label(user: dict[str, Any]) -> str:
    return f"{user['name']} (id {user['id']})"


def add_photo(user: dict[str, Any], where: str) -> None:
    """An uploader and Add photo; after the API refused the chosen photo as someone else's, a box to
    add it anyway (a much older photo): offered for that photo only, never by default."""
    # Keyed by id: a photo chosen for one person is never offered to another one.
    key = f"{fresh_key(ADD_PHOTO)}-{user['id']}"
    photo = st.file_uploader(f"Another photo of {user['name']}", type=IMAGE_TYPES, key=key)
    upload = None if photo is None else Upload(photo.name, photo.getvalue())
    if st.button("Add photo", disabled=upload is None, key=f"{key}-button") and upload is not None:
        send_photo(user, upload, where, key)
    # Below the button, so that it shows under the refusal in the run that refused.
    if upload is not None and refused(key, upload, NOT_THE_PERSON):
        st.checkbox(f"Add anyway: it is {user['name']} (a much older photo, say)", key=f"{key}-anyway")


def send_photo(user: dict[str, Any], upload: Upload, where: str, key: str) -> None:
    force = anyway(key, upload, NOT_THE_PERSON)
    change(
        "Adding the photo…",
        noting_refusal(
            key, upload, NOT_THE_PERSON, lambda: api().add_face(user["id"], upload, where, force=force)
        ),
        lambda answer: f"{user['name']} now has {counted(answer['face_count'], 'photo')}.",
        clears=ADD_PHOTO,
        failure=f"Could not add the photo of {user['name']}",
        photo=upload,
    )


def added_at(face: dict[str, Any]) -> str:
    return datetime.fromisoformat(face["created_at"]).strftime("%Y-%m-%d %H:%M %Z").strip()


def delete_photo(user: dict[str, Any], face: dict[str, Any], where: str) -> None:
    change(
        "Deleting the photo…",
        lambda: api().delete_face(user["id"], face["id"], where),
        lambda answer: (
            f"Deleted photo {face['id']} of {user['name']}; {counted(answer['face_count'], 'photo')} left."
        ),
        failure=f"Could not delete photo {face['id']}",
    )


def photo_list(user: dict[str, Any], where: str) -> None:
    """The person's stored photos (the faces kept of them), each with its delete button."""
    faces = call(
        "Loading the photos…",
        lambda: api().faces(user["id"], where),
        failure=f"Could not list the photos of {user['name']}",
    )
    if faces is None:
        return
    st.markdown(f"**{counted(len(faces), 'stored photo')} of {user['name']}**")
    for face in faces:
        number, added, size, button = st.columns([1, 2, 2, 2], vertical_alignment="center")
        number.text(f"Photo {face['id']}")
        added.text(added_at(face))
        size.text(f"face {face['box_width']:.0f} × {face['box_height']:.0f} px")
        if button.button("Delete photo", icon=":material/delete:", key=f"delete-face-{face['id']}"):
            delete_photo(user, face, where)


def rename(user: dict[str, Any], where: str) -> None:
    # Keyed by id, as the other inputs: a name typed for one person is never given to another one.
    key = f"rename-{user['id']}"
    name = st.text_input("New name", value=user["name"], max_chars=200, key=key).strip()
    # Never disabled: a click right after typing would land on the button the previous run disabled.
    if not st.button("Rename", key=f"{key}-button"):
        return
    if not name or name == user["name"]:
        st.warning(f"Type the new name of {user['name']} first.", icon=":material/warning:")
    else:
        change(
            f"Renaming {user['name']}…",
            lambda: api().rename_user(user["id"], name, where),
            lambda answer: f"Renamed {user['name']} to {answer['name']}.",
            failure=f"Could not rename {user['name']}",
        )


def delete_user(user: dict[str, Any], where: str) -> None:
    # Keyed by id: a confirmation given for one person must not carry over to the next one listed.
    sure = st.checkbox(f"Yes, delete {user['name']} and all their photos", key=f"confirm-delete-{user['id']}")
    if st.button("Delete", type="primary", disabled=not sure, key=f"delete-{user['id']}"):
        change(
            "Deleting…",
            lambda: api().delete_user(user["id"], where),
            lambda _: f"Deleted {user['name']}.",
            failure="Could not delete",
        )


def merge(user: dict[str, Any], users: list[dict[str, Any]], where: str) -> None:
    """Merge another record of the same person into this one (their photos move here; this name stays)."""
    others = {u["id"]: user_label(u) for u in users if u["id"] != user["id"]}
    key = f"merge-{user['id']}"
    other = st.selectbox(
        "Merge in",
        list(others),
        index=None,
        format_func=others.__getitem__,
        key=key,
        placeholder="Another record",
    )
    if st.button("Merge", key=f"{key}-button") and other is not None:
        change(
            "Merging…",
            lambda: api().merge_user(user["id"], other, where),
            lambda answer: (
                f"Merged {others[other]} into {user['name']} ({answer['faces_moved']} photos moved)."
            ),
            failure="Could not merge",
        )


def user_table(users: list[dict[str, Any]]) -> None:
    st.subheader(counted(len(users), "registered person", "registered people"))
    if users:
        rows = [{"id": u["id"], "name": u["name"], "photos": u["face_count"]} for u in users]
        st.dataframe(rows, hide_index=True)


def manage(users: list[dict[str, Any]], where: str) -> None:
    """Add a photo to, rename, or delete the person chosen, or one of their photos; nobody is chosen
    until the user picks one."""
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
        add_photo(by_id[chosen], where)
    with delete_column:
        rename(by_id[chosen], where)
        merge(by_id[chosen], users, where)
        delete_user(by_id[chosen], where)
    photo_list(by_id[chosen], where)


st.title("Gallery")
where = collection()
st.caption(f"Collection {where} (choose another in the sidebar)")
show_flash()
users = call("Loading the gallery…", lambda: api().users(where), failure="Could not load the gallery")
if users is not None:
    user_table(users)
register_form(where)
if users:
    manage(users, where)
