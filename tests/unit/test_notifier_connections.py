"""Each notification channel reuses one HTTP client: one TCP connection for many messages."""

from __future__ import annotations

from chatstubs import ChatStub
from test_notify import SECRET, notice, world_with_incident

from daemon.notify.pipeline import ChatNotifier
from handlers.notifiers.mattermost import MattermostWebhook
from handlers.notifiers.slack import SlackBot, SlackWebhook
from handlers.notifiers.teams import TeamsWorkflow
from handlers.notifiers.webhook import JsonWebhook


async def test_each_channel_keeps_one_connection_for_its_messages() -> None:
    with ChatStub(webhook_secret=SECRET, keep_alive=True) as stub:
        w, inc = world_with_incident()
        msg = notice("x", w, inc).message
        targets: dict[str, ChatNotifier] = {
            stub.SLACK_HOOK: SlackWebhook("sw", stub.url(stub.SLACK_HOOK), 5),
            stub.SLACK_API: SlackBot("sb", "xoxb-test-token", "C0ONCALL",
                                     stub.url(stub.SLACK_API), 5),
            stub.MATTERMOST: MattermostWebhook("mm", stub.url(stub.MATTERMOST), 5),
            stub.TEAMS: TeamsWorkflow("tm", stub.url(stub.TEAMS), 5),
            stub.WEBHOOK: JsonWebhook("wh", stub.url(stub.WEBHOOK), 5, secret=SECRET),
        }
        for _ in range(3):
            for t in targets.values():
                await t.deliver(msg, None)
        assert stub.problems() == []
        ports = {path: {r.peer for r in stub.at(path)} for path in targets}
        for path, seen in ports.items():
            assert len(stub.at(path)) == 3, path
            assert len(seen) == 1, f"{path}: {len(seen)} connections for 3 messages"
        # Channels do not share a client.
        assert len(set().union(*ports.values())) == len(targets)
        for t in targets.values():
            await t.aclose()  # type: ignore[attr-defined]
        # A closed channel opens a fresh client at its next message.
        await targets[stub.WEBHOOK].deliver(msg, None)
        assert len({r.peer for r in stub.at(stub.WEBHOOK)}) == 2
        await targets[stub.WEBHOOK].aclose()  # type: ignore[attr-defined]
