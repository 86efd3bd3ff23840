import { createHash } from 'node:crypto'

// GET /auth/confirm: the page mailed links open. The token is in the fragment, which browsers
// never send, and only a button or a form posts it: loading the page (a mail scanner following the
// link) uses nothing up. No external resources; the inline style and script are allowed by their
// hashes and nothing else is.

const STYLE = `
body { font: 16px/1.5 system-ui, sans-serif; max-width: 28rem; margin: 4rem auto; padding: 0 1rem; color: #1b1f24; }
h1 { font-size: 1.4rem; }
label, input, button { display: block; width: 100%; box-sizing: border-box; }
input { margin: .3rem 0 1rem; padding: .5rem; font: inherit; }
button { padding: .6rem; font: inherit; background: #1f6feb; color: #fff; border: 0; border-radius: 6px; cursor: pointer; }
button:disabled { opacity: .6; }
#status { margin-top: 1rem; }
.error { color: #b3261e; }
[hidden] { display: none; }
`

const SCRIPT = `
const params = new URLSearchParams(location.hash.slice(1));
const type = params.get('type');
const token = params.get('token');
// The token leaves the address bar and the history entry.
history.replaceState(null, '', location.pathname + location.search);
const $ = (id) => document.getElementById(id);
const say = (text, error) => { $('status').textContent = text; $('status').className = error ? 'error' : ''; };
const ACTIONS = {
  'verify-email': { title: 'Confirm your email address', button: 'Confirm', done: 'Your email address is confirmed. You can close this page.' },
  'change-email': { title: 'Confirm your new email address', button: 'Confirm the new address', done: 'Your email address has been changed. You can close this page.' },
  'reset-password': { title: 'Choose a new password', button: 'Set the new password', done: 'Your password has been changed, and every session signed out. Sign in with the new password.' }
};
const action = ACTIONS[type];
if (!action || !token) {
  $('title').textContent = 'This link is incomplete';
  say('Open the link from the email again, as a whole.', true);
} else {
  $('title').textContent = action.title;
  $('submit').textContent = action.button;
  $('password-field').hidden = type !== 'reset-password';
  $('password').required = type === 'reset-password';
  $('form').hidden = false;
  $('form').addEventListener('submit', async (event) => {
    event.preventDefault();
    $('submit').disabled = true;
    say('…');
    const reset = type === 'reset-password';
    try {
      const res = await fetch(reset ? 'password/reset' : 'email/verify', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(reset ? { token, new_password: $('password').value } : { token }),
        referrerPolicy: 'no-referrer'
      });
      if (res.ok) { $('form').hidden = true; say(action.done); return; }
      const body = await res.json().catch(() => ({}));
      const messages = { TOKEN_INVALID: 'This link is not valid, or has been used already.', TOKEN_EXPIRED: 'This link has expired. Ask for a new one.' };
      say(messages[body.code] || body.message || 'Something went wrong (' + res.status + ').', true);
      // A refused password can be corrected; a dead link cannot.
      $('submit').disabled = body.code === 'TOKEN_INVALID' || body.code === 'TOKEN_EXPIRED';
    } catch {
      say('The service could not be reached. Try again.', true);
      $('submit').disabled = false;
    }
  });
}
`

const sha256 = (s: string): string => `'sha256-${createHash('sha256').update(s).digest('base64')}'`

export const CONFIRM_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Confirm</title>
<style>${STYLE}</style>
</head>
<body>
<h1 id="title">Confirm</h1>
<form id="form" hidden>
<div id="password-field" hidden><label for="password">New password</label><input id="password" type="password" autocomplete="new-password" minlength="1" maxlength="1024"></div>
<button id="submit" type="submit">Confirm</button>
</form>
<p id="status" role="status"></p>
<noscript><p>This page needs JavaScript to confirm the link.</p></noscript>
<script>${SCRIPT}</script>
</body>
</html>
`

export const CONFIRM_HEADERS = {
  'content-type': 'text/html; charset=utf-8',
  'content-security-policy': `default-src 'none'; script-src ${sha256(SCRIPT)}; style-src ${sha256(STYLE)}; connect-src 'self'; ` +
    "form-action 'none'; base-uri 'none'; frame-ancestors 'none'",
  'referrer-policy': 'no-referrer',
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  // The page is the same for everyone and holds no token; the token stays in the browser.
  'cache-control': 'no-store'
}
