// Drive the Zendesk simulator with node-zendesk (a popular Zendesk client), unchanged apart from
// the endpoint URI. Reads the JSON line `deskgate sim` prints from argv[2]; prints one JSON object
// with what it saw; exits non-zero on any error.
const fs = require('fs');
const zendesk = require('node-zendesk');

const info = JSON.parse(fs.readFileSync(process.argv[2], 'utf8').split('\n')[0]);
const cred = info.credentials.find((c) => c.kind === 'api_token');
const client = zendesk.createClient({ username: cred.email, token: cred.token, endpointUri: info.base_url + '/api/v2' });

(async () => {
  const me = await client.users.me();
  const id = info.ticket_ids[0];
  const shown = await client.tickets.show(id);
  const updated = await client.tickets.update(id, { ticket: { comment: { body: 'Fixed, thanks!', public: true }, status: 'solved' } });
  const body = (r) => (r && r.result ? r.result : r);
  console.log(JSON.stringify({ me: body(me).id, ticket: body(shown).id, status: body(updated).status }));
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
