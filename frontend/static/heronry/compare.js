/*
 * Heronry comparison-form glue. Plain ES2020 script; exposes window.Heronry.compare.
 *
 * [data-compare]                       one comparison fragment
 *   data-heartbeat-url, data-heartbeat-seconds   POST there every N s while visible
 *   data-release-url                     sendBeacon there when the page is hidden / left
 *   <form data-judgment-form>            buttons name="choice", <input type="hidden" name="time_spent_ms">
 *   [data-role="status"] (optional)      where "Saving…" is shown (created if missing)
 *
 * time_spent_ms = wall-clock ms since the fragment appeared (was initialised).
 * Events: "heronry:heartbeat" {ok, status} on [data-compare] after each beat.
 */
(function () {
  'use strict';

  const Heronry = (window.Heronry = window.Heronry || {});
  if (Heronry.compare) return;

  const scopes = new WeakMap(); // [data-compare] -> state
  const live = new Set();

  function csrfToken() {
    const b = document.body;
    if (!b) return '';
    if (b.dataset.csrf) return b.dataset.csrf;
    try {
      const h = JSON.parse(b.getAttribute('hx-headers') || b.getAttribute('data-hx-headers') || '{}');
      if (h['X-CSRFToken']) return h['X-CSRFToken'];
    } catch (_) { /* not JSON */ }
    const m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    if (m) return decodeURIComponent(m[1]);
    const i = document.querySelector('input[name="csrfmiddlewaretoken"]');
    return i ? i.value : '';
  }

  const formOf = (elt) => (elt && elt.closest ? elt.closest('form[data-judgment-form]') : null);

  function elapsed(scope) {
    const st = scope && scopes.get(scope);
    return st ? Math.max(0, Math.round(performance.now() - st.start)) : 0;
  }

  function stampTime(form) {
    const ms = String(elapsed(form.closest('[data-compare]')));
    form.querySelectorAll('input[name="time_spent_ms"]').forEach((i) => { i.value = ms; });
    return ms;
  }

  function statusEl(form) {
    const scope = form.closest('[data-compare]') || form;
    let s = scope.querySelector('[data-role="status"]');
    if (!s) {
      s = document.createElement('p');
      s.className = 'save-status';
      s.setAttribute('data-role', 'status');
      s.setAttribute('role', 'status');
      form.appendChild(s);
    }
    return s;
  }

  function setSaving(form) {
    form.dataset.saving = 'true';
    form.classList.add('is-saving');
    form.setAttribute('aria-busy', 'true');
    form.querySelectorAll('button, input[type="submit"]').forEach((b) => {
      if (!b.disabled) { b.disabled = true; b.setAttribute('data-saving-disabled', ''); }
    });
    const s = statusEl(form);
    s.classList.remove('is-error');
    s.textContent = 'Saving…';
  }

  function resetSaving(form, error) {
    delete form.dataset.saving;
    form.classList.remove('is-saving');
    form.removeAttribute('aria-busy');
    form.querySelectorAll('[data-saving-disabled]').forEach((b) => {
      b.disabled = false;
      b.removeAttribute('data-saving-disabled');
    });
    const s = statusEl(form);
    s.classList.toggle('is-error', !!error);
    s.textContent = error || '';
  }

  // --- htmx request lifecycle --------------------------------------------------
  document.addEventListener('htmx:configRequest', (e) => {
    const form = formOf(e.detail && e.detail.elt);
    if (!form) return;
    const ms = stampTime(form);
    if (e.detail.parameters) e.detail.parameters.time_spent_ms = ms;
  });

  document.addEventListener('htmx:beforeRequest', (e) => {
    const form = formOf(e.detail && e.detail.elt);
    if (!form) return;
    if (form.dataset.saving === 'true') { e.preventDefault(); return; } // second submit: drop
    setSaving(form); // the values are already collected at this point
  });

  document.addEventListener('htmx:afterRequest', (e) => {
    const form = formOf(e.detail && e.detail.elt);
    if (!form) return;
    if (!e.detail.successful) {
      resetSaving(form, 'Could not save. Please try again.');
      return;
    }
    // Normally the response replaces the fragment. If it did not, unlock.
    setTimeout(() => { if (form.isConnected && form.dataset.saving === 'true') resetSaving(form); }, 2000);
  });

  // Plain (non-htmx) submission still carries the elapsed time.
  document.addEventListener('submit', (e) => {
    const form = e.target.closest && e.target.closest('form[data-judgment-form]');
    if (!form) return;
    stampTime(form);
    if (window.htmx) return; // htmx path handled above
    if (form.dataset.saving === 'true') { e.preventDefault(); return; }
    setTimeout(() => setSaving(form), 0); // after the submitter's value is taken
  }, true);

  // --- lease heartbeat / release ------------------------------------------------
  function beat(scope) {
    const url = scope.dataset.heartbeatUrl;
    if (!url || !window.fetch) return;
    fetch(url, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'X-CSRFToken': csrfToken() },
    }).then(
      (r) => scope.dispatchEvent(new CustomEvent('heronry:heartbeat', { bubbles: true, detail: { ok: r.ok, status: r.status } })),
      () => scope.dispatchEvent(new CustomEvent('heronry:heartbeat', { bubbles: true, detail: { ok: false, status: 0 } })),
    );
  }

  function release(scope) {
    const st = scopes.get(scope);
    const url = scope.dataset.releaseUrl;
    if (!st || !url || st.released) return;
    const form = scope.querySelector('form[data-judgment-form]');
    if (form && form.dataset.saving === 'true') return; // answered: nothing to give back
    st.released = true;
    const fd = new FormData();
    fd.append('csrfmiddlewaretoken', csrfToken());
    let sent = false;
    try { sent = !!(navigator.sendBeacon && navigator.sendBeacon(url, fd)); } catch (_) { sent = false; }
    if (!sent && window.fetch) {
      fetch(url, { method: 'POST', body: fd, credentials: 'same-origin', keepalive: true }).catch(() => {});
    }
  }

  function forget(scope) {
    const st = scopes.get(scope);
    if (st && st.timer) clearInterval(st.timer);
    live.delete(scope);
  }

  function prune() {
    for (const s of Array.from(live)) if (!s.isConnected) forget(s);
  }

  function initScope(scope) {
    if (scopes.has(scope)) return;
    const st = { start: performance.now(), timer: 0, released: false };
    scopes.set(scope, st);
    live.add(scope);
    const secs = parseFloat(scope.dataset.heartbeatSeconds);
    if (scope.dataset.heartbeatUrl && secs > 0) {
      st.timer = setInterval(() => {
        if (!scope.isConnected) return forget(scope);
        if (document.visibilityState === 'visible') beat(scope);
      }, secs * 1000);
    }
  }

  document.addEventListener('visibilitychange', () => {
    prune();
    for (const s of live) {
      if (document.visibilityState === 'hidden') release(s);
      else {
        const st = scopes.get(s);
        if (st && st.released) { st.released = false; beat(s); } // claim the lease again
      }
    }
  });
  window.addEventListener('pagehide', () => {
    prune();
    for (const s of live) release(s);
  });

  function init(root) {
    root = root || document;
    if (root.matches && root.matches('[data-compare]')) initScope(root);
    if (root.querySelectorAll) root.querySelectorAll('[data-compare]').forEach(initScope);
    prune();
  }

  Heronry.compare = { init, elapsed, csrfToken };

  document.addEventListener('htmx:load', (e) => init(e.detail && e.detail.elt ? e.detail.elt : e.target));
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', () => init(document));
  else init(document);
})();
