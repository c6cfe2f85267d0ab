"""Comments on items: researchers discuss a flagged item on Review, and the annotators who flagged it
read the comments beside their own labels on Annotate (they cannot answer in the app).

Blindness: an annotator reads comments only on items they flagged themselves, so a comment must not
quote other annotators' answers; Review says so where comments are written.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from annotations.db import write_session
from annotations.labeling import Comment
from annotations.models import Item, ItemComment, User, utcnow
from cftclip_core.errors import CftClipError

MAX_COMMENT_LENGTH = 2_000
COMMENTERS = ("researcher", "admin")


class CommentError(CftClipError):
    """A comment that cannot be saved as asked."""


def add_comment(factory: sessionmaker[Session], item_id: int, user_id: int, body: str) -> Comment:
    """Save a comment by a researcher or an admin (annotators read comments; they do not write them)."""
    body = (body or "").strip()
    if not body:
        raise CommentError("The comment is empty; write something first.")
    if len(body) > MAX_COMMENT_LENGTH:
        raise CommentError(f"The comment is {len(body):,} characters long; keep it under {MAX_COMMENT_LENGTH:,}.")
    with write_session(factory) as session:
        user = session.get(User, user_id)
        if user is None:
            raise CommentError(f"No user with id {user_id}; sign in again.")
        if session.get(Item, item_id) is None:
            raise CommentError(f"No item with id {item_id}; it may have been deleted with its dataset.")
        if user.role not in COMMENTERS:
            raise CommentError("Only researchers and admins write comments; annotators flag an item (F) with a note.")
        comment = ItemComment(item_id=item_id, user_id=user_id, body=body, at=utcnow())
        session.add(comment)
    return Comment(item_id, user.username, body, comment.at)


def comments_on(session: Session, item_id: int) -> list[Comment]:
    """Every comment on the item, oldest first (for researchers)."""
    rows = session.execute(
        select(ItemComment.item_id, User.username, ItemComment.body, ItemComment.at)
        .join(User, User.id == ItemComment.user_id).where(ItemComment.item_id == item_id)
        .order_by(ItemComment.at, ItemComment.id)
    ).all()
    return [Comment(*row) for row in rows]
