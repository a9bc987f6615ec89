// A real OpenID provider (npm `oidc-provider`, a certified implementation) for Inquest's
// tests. tests/support/oidc.rs installs this folder's lock file into a cache and runs:
//
//   node provider.mjs <modules-dir> '<json settings>'
//
// Settings: {"clients": [{client_id, client_secret?, redirect_uris}], "users": [{sub,
// username, password, name, email, groups}], "resource": "<resource indicator>"}.
// It listens on 127.0.0.1 on a free port, prints one JSON line {"issuer": ...} when it
// is ready, and exits when its standard input closes or its parent dies, so a test that
// crashes leaves nothing running.
//
// Logins go through real interactions: a login form (username + password, checked
// against the static users) and a consent form, both plain HTML forms that a test
// fills in over HTTP like a browser would.

import http from 'node:http';
import crypto from 'node:crypto';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const [modulesDir, rawSettings] = process.argv.slice(2);
if (!modulesDir || !rawSettings) {
  console.error('usage: node provider.mjs <node_modules dir> <json settings>');
  process.exit(2);
}
const settings = JSON.parse(rawSettings);

// The package lives in a cache outside the checkout; ESM ignores NODE_PATH, so it is
// imported by path.
const { default: Provider, errors } = await import(
  pathToFileURL(path.join(modulesDir, 'oidc-provider', 'lib', 'index.js')).href
);
// Fresh signing keys per run: RS256 for ID tokens, ES256 for JWT access tokens, so both
// key types go through the validator.
function signingKey(alg) {
  const { privateKey } = alg === 'RS256'
    ? crypto.generateKeyPairSync('rsa', { modulusLength: 2048 })
    : crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { ...privateKey.export({ format: 'jwk' }), alg, use: 'sig', kid: `${alg.toLowerCase()}-${crypto.randomUUID()}` };
}

const users = new Map(settings.users.map((u) => [u.sub, u]));
const byUsername = new Map(settings.users.map((u) => [u.username, u]));

const server = http.createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: settings.clients.map((c) => ({
    client_id: c.client_id,
    ...(c.client_secret
      ? { client_secret: c.client_secret, token_endpoint_auth_method: 'client_secret_basic' }
      : { token_endpoint_auth_method: 'none' }),
    redirect_uris: c.redirect_uris,
    post_logout_redirect_uris: c.post_logout_redirect_uris ?? [],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    id_token_signed_response_alg: 'RS256',
  })),
  jwks: { keys: [signingKey('RS256'), signingKey('ES256')] },
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email'],
    groups: ['groups'],
  },
  scopes: ['openid', 'profile', 'email', 'groups'],
  // Put the claims of the granted scopes into the ID token too (not only at userinfo),
  // as the providers Inquest meets are configured to do for `groups`.
  conformIdTokenClaims: false,
  // Every client must use PKCE, so a login that forgot it fails here.
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: false },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (_ctx, _client, oneOf) => oneOf,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, indicator) => {
        if (indicator !== settings.resource) throw new errors.InvalidTarget();
        return {
          scope: 'api',
          audience: indicator,
          accessTokenTTL: 300,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'ES256' } },
        };
      },
    },
  },
  extraTokenClaims: async (_ctx, token) => {
    const user = token.accountId && users.get(token.accountId);
    return user ? { groups: user.groups } : undefined;
  },
  findAccount: async (_ctx, sub) => {
    const user = users.get(sub);
    if (!user) return undefined;
    return {
      accountId: sub,
      claims: async () => ({
        sub,
        name: user.name,
        preferred_username: user.username,
        email: user.email,
        groups: user.groups,
      }),
    };
  },
  renderError: async (ctx, out) => {
    ctx.type = 'application/json';
    ctx.body = out;
  },
});

const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(res, status, title, body) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(`<!doctype html><html><head><title>${escape(title)}</title></head><body>${body}</body></html>`);
}

function loginForm(uid, error) {
  return `<h1>Sign in</h1>${error ? `<p class="error">${escape(error)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}/login">
<input name="username"><input name="password" type="password"><button type="submit">Sign in</button>
</form>`;
}

function consentForm(uid, clientId, scopes) {
  return `<h1>Authorize ${escape(clientId)}</h1><p>Scopes: ${escape(scopes)}</p>
<form method="post" action="/interaction/${escape(uid)}/confirm"><button type="submit">Allow</button></form>`;
}

async function formBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) return page(res, 400, 'Error', '<p>interaction mismatch</p>');
  const { prompt, params } = details;

  if (req.method === 'GET' && !action) {
    if (prompt.name === 'login') return page(res, 200, 'Sign in', loginForm(uid));
    return page(res, 200, 'Authorize', consentForm(uid, params.client_id, params.scope));
  }
  if (req.method === 'POST' && action === 'login' && prompt.name === 'login') {
    const form = await formBody(req);
    const user = byUsername.get(form.get('username') ?? '');
    const given = Buffer.from(form.get('password') ?? '');
    const expected = Buffer.from(user?.password ?? '');
    if (!user || given.length !== expected.length || !crypto.timingSafeEqual(given, expected)) {
      return page(res, 200, 'Sign in', loginForm(uid, 'Invalid username or password.'));
    }
    return provider.interactionFinished(req, res, { login: { accountId: user.sub } }, { mergeWithLastSubmission: false });
  }
  if (req.method === 'POST' && action === 'confirm' && prompt.name === 'consent') {
    const missing = prompt.details;
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    const grantId = await grant.save();
    return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }
  return page(res, 400, 'Error', `<p>unexpected ${escape(req.method)} ${escape(action ?? '')} at prompt ${escape(prompt.name)}</p>`);
}

const callback = provider.callback();
server.on('request', async (req, res) => {
  const match = /^\/interaction\/([^/?]+)(?:\/(login|confirm))?(?:\?.*)?$/u.exec(req.url ?? '');
  if (!match) return callback(req, res);
  try {
    await interaction(req, res, match[1], match[2]);
  } catch (err) {
    console.error('interaction failed:', err);
    if (!res.headersSent) page(res, 500, 'Error', `<p>${escape(err.message)}</p>`);
  }
});

// Tie the provider's life to the test that started it: stdin closes when the parent
// exits for any reason; a parent that vanished without closing it shows as a new ppid.
const parent = process.ppid;
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
setInterval(() => {
  if (process.ppid !== parent) process.exit(0);
}, 500).unref();

console.log(JSON.stringify({ issuer }));
