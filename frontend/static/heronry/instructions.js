/*
 * The annotator page's instructions: open on the first visit, folded away once the first answer is given, and
 * remembered per project in localStorage (the server also opens them only while the annotator has no answers,
 * so it works without storage too). Plain ES2020 script; no inline code (the site's CSP forbids it).
 *
 * <details data-instructions="<project slug>">  the instructions; the user may open them again any time
 */
(function () {
  'use strict';

  const Heronry = (window.Heronry = window.Heronry || {});
  if (Heronry.instructions) return;

  const storageKey = (slug) => `heronry:instructions-seen:${slug}`;

  function seen(slug) {
    try { return window.localStorage.getItem(storageKey(slug)) === '1'; } catch (_) { return false; }
  }

  function remember(slug) {
    try { window.localStorage.setItem(storageKey(slug), '1'); } catch (_) { /* private mode: the server's rule */ }
  }

  function fold() {
    for (const details of document.querySelectorAll('details[data-instructions]')) {
      remember(details.dataset.instructions);
      details.open = false;
    }
  }

  function init() {
    for (const details of document.querySelectorAll('details[data-instructions]')) {
      if (seen(details.dataset.instructions)) details.open = false;
    }
  }

  // An answer sent (htmx) means the instructions were read: fold them so the next pair has the room.
  document.addEventListener('htmx:beforeRequest', (e) => {
    const elt = e.detail && e.detail.elt;
    if (elt && elt.closest && elt.closest('form[data-judgment-form]')) fold();
  });

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();

  Heronry.instructions = { fold, seen };
})();
