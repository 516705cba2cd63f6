"""Drive the Intercom simulator with Intercom's official Python SDK (python-intercom), unchanged
apart from the base URL. Reads the JSON line `deskgate sim` prints from argv[1]; prints one JSON
object with what it saw; exits non-zero on any error."""
import json
import sys

from intercom import Intercom

info = json.loads(open(sys.argv[1]).readline())
client = Intercom(base_url=info["base_url"], token=info["credentials"][0]["token"])
me = client.admins.identify()
conversation_id = str(info["ticket_ids"][0])
found = client.conversations.find(conversation_id=conversation_id)
client.conversations.reply(
    conversation_id=conversation_id,
    request={"message_type": "comment", "type": "admin", "admin_id": me.id, "body": "Fixed, thanks!"},
)
opened = [c.id for c in client.conversations.search(query={"field": "state", "operator": "=", "value": "open"})]
print(json.dumps({"admin_id": me.id, "found": found.id, "state": found.state, "open": opened}))
