/*
 * Heronry keyboard shortcuts. Plain ES2020 script; exposes window.Heronry.keys.
 *
 * Any element with data-key="<KeyboardEvent.key>" is a shortcut: pressing the
 * key clicks the first visible, enabled such element in document order.
 * Optional: data-key-label (shown in the help, e.g. "Space", "←"),
 * data-key-desc (help text; default: title without a trailing "(…)" hint,
 * else aria-label, else the text without <kbd> hints).
 * "?" toggles the shortcuts help dialog (built from every [data-key] on the
 * page); clicking an element with data-key="?" or data-action="shortcuts"
 * toggles it too.
 * Also: <video data-hover-play> plays while the pointer is over it; <video data-toggle-play tabindex="0">
 * plays or pauses on Enter / Space while focused, or on a click (the answer history's thumbnails).
 * Elements with data-key-doc (and data-key-label, data-key-desc) only document a key that a page's own
 * script handles (the ranking board's): they are listed in the help, never clicked.
 *
 * Not handled: keys typed into text fields, selects or contenteditable, keys
 * with Ctrl/Meta/Alt, and keys the focused control handles itself (Space/Enter
 * on a button, Space on a checkbox, arrows on a range slider...), so a key
 * never both activates the focused control and fires a shortcut.
 */
(function () {
  'use strict';

  const Heronry = (window.Heronry = window.Heronry || {});
  if (Heronry.keys) return;

  const NON_TEXT_INPUTS = new Set(['button', 'submit', 'reset', 'image', 'checkbox', 'radio', 'range', 'color', 'file', 'hidden']);
  const RANGE_KEYS = new Set(['ArrowLeft', 'ArrowRight', 'ArrowUp', 'ArrowDown', 'Home', 'End', 'PageUp', 'PageDown']);
  const DEFAULT_LABELS = { ' ': 'Space', ArrowLeft: '←', ArrowRight: '→', ArrowUp: '↑', ArrowDown: '↓', Escape: 'Esc' };
  const flashTimers = new WeakMap();

  function isEditable(t) {
    if (!t || t.nodeType !== 1) return false;
    if (t.isContentEditable) return true;
    const tag = t.tagName;
    if (tag === 'TEXTAREA' || tag === 'SELECT') return true;
    if (tag === 'INPUT') return !NON_TEXT_INPUTS.has((t.type || 'text').toLowerCase());
    return t.getAttribute('role') === 'textbox';
  }

  // Would the focused element itself act on this key?
  function nativeHandles(t, key) {
    if (!t || t.nodeType !== 1) return false;
    const tag = t.tagName;
    const type = tag === 'INPUT' ? (t.type || '').toLowerCase() : '';
    const buttonLike = tag === 'BUTTON' || tag === 'SUMMARY' || t.getAttribute('role') === 'button' ||
      type === 'button' || type === 'submit' || type === 'reset' || type === 'image';
    if (buttonLike) return key === ' ' || key === 'Enter';
    if (tag === 'A' && t.hasAttribute('href')) return key === 'Enter';
    if (type === 'checkbox') return key === ' ';
    if (type === 'radio') return key === ' ' || RANGE_KEYS.has(key);
    if (type === 'range' || t.getAttribute('role') === 'slider') return RANGE_KEYS.has(key);
    return false;
  }

  function keyMatches(attr, key) {
    if (attr === key) return true;
    return attr.length === 1 && key.length === 1 && attr.toLowerCase() === key.toLowerCase();
  }

  function isVisible(el) {
    if (el.checkVisibility) return el.checkVisibility({ visibilityProperty: true, checkVisibilityCSS: true });
    return el.getClientRects().length > 0;
  }

  function isUsable(el) {
    if (el.disabled || el.getAttribute('aria-disabled') === 'true') return false;
    if (el.closest('[inert], fieldset[disabled]')) return false;
    return isVisible(el);
  }

  function findTarget(key) {
    for (const el of document.querySelectorAll('[data-key]')) {
      if (keyMatches(el.dataset.key, key) && isUsable(el)) return el;
    }
    return null;
  }

  function flash(el) {
    el.classList.remove('key-pressed');
    void el.offsetWidth; // restart the animation on repeated presses
    el.classList.add('key-pressed');
    clearTimeout(flashTimers.get(el));
    flashTimers.set(el, setTimeout(() => el.classList.remove('key-pressed'), 200));
  }

  const isSubmit = (el) => (el.tagName === 'BUTTON' || el.tagName === 'INPUT') && el.type === 'submit';

  // --- shortcuts help dialog ------------------------------------------------
  let dialog = null;
  let returnFocus = null;

  function describe(el) {
    if (el.dataset.keyDesc) return el.dataset.keyDesc.trim();
    const title = (el.getAttribute('title') || '').replace(/\s*\([^()]*\)\s*$/, '').trim();
    if (title) return title;
    const aria = (el.getAttribute('aria-label') || '').trim();
    if (aria) return aria;
    const clone = el.cloneNode(true);
    clone.querySelectorAll('kbd, [aria-hidden="true"]').forEach((k) => k.remove());
    return clone.textContent.replace(/\s+/g, ' ').trim();
  }

  function list() {
    const rows = [];
    const seen = new Set();
    for (const el of document.querySelectorAll('[data-key]')) {
      const key = el.dataset.key;
      const label = el.dataset.keyLabel || DEFAULT_LABELS[key] || key;
      const desc = describe(el);
      const id = label + '\u0000' + desc;
      if (seen.has(id)) continue;
      seen.add(id);
      rows.push({ key, label, desc, enabled: isUsable(el) });
    }
    for (const el of document.querySelectorAll('[data-key-doc]')) {
      const label = el.dataset.keyLabel || el.dataset.keyDoc;
      const desc = (el.dataset.keyDesc || el.textContent || '').replace(/\s+/g, ' ').trim();
      const id = label + '\u0000' + desc;
      if (!label || seen.has(id)) continue;
      seen.add(id);
      rows.push({ key: el.dataset.keyDoc, label, desc, enabled: true });
    }
    if (!rows.some((r) => r.key === '?')) rows.push({ key: '?', label: '?', desc: 'Show or hide this list', enabled: true });
    rows.push({ key: 'Escape', label: 'Esc', desc: 'Close this list', enabled: true });
    return rows;
  }

  function build() {
    dialog = document.createElement('dialog');
    dialog.className = 'shortcuts-dialog';
    dialog.setAttribute('role', 'dialog');
    dialog.setAttribute('aria-modal', 'true');
    dialog.setAttribute('aria-labelledby', 'heronry-shortcuts-title');
    dialog.innerHTML =
      '<div class="shortcuts-head"><h2 id="heronry-shortcuts-title">Keyboard shortcuts</h2>' +
      '<button type="button" class="btn btn-quiet" data-close aria-label="Close">×</button></div>' +
      '<table class="shortcuts-list"><tbody></tbody></table>' +
      '<p class="shortcuts-foot">Shortcuts are off while you type in a field.</p>';
    dialog.addEventListener('click', (e) => {
      if (e.target === dialog || e.target.closest('[data-close]')) close();
    });
    dialog.addEventListener('close', restoreFocus);
    document.body.appendChild(dialog);
  }

  function restoreFocus() {
    const r = returnFocus;
    returnFocus = null;
    if (r && r.isConnected && typeof r.focus === 'function') r.focus({ preventScroll: true });
  }

  const isOpen = () => !!(dialog && dialog.open);

  function open() {
    if (!document.body) return;
    if (!dialog || !dialog.isConnected) build();
    const tbody = dialog.querySelector('tbody');
    tbody.textContent = '';
    for (const r of list()) {
      const tr = document.createElement('tr');
      if (!r.enabled) tr.className = 'is-disabled';
      const th = document.createElement('th');
      th.scope = 'row';
      const kbd = document.createElement('kbd');
      kbd.textContent = r.label;
      th.appendChild(kbd);
      const td = document.createElement('td');
      td.textContent = r.desc;
      tr.append(th, td);
      tbody.appendChild(tr);
    }
    if (isOpen()) return;
    returnFocus = document.activeElement;
    if (dialog.showModal) dialog.showModal();
    else dialog.setAttribute('open', '');
    dialog.querySelector('[data-close]').focus();
  }

  function close() {
    if (!isOpen()) return;
    if (dialog.close) dialog.close(); // fires "close" -> restoreFocus
    else { dialog.removeAttribute('open'); restoreFocus(); }
  }

  const toggle = () => (isOpen() ? close() : open());

  // --- key handling -----------------------------------------------------------
  function onKeyDown(e) {
    if (e.defaultPrevented || e.isComposing || e.ctrlKey || e.metaKey || e.altKey) return;
    const key = e.key;
    if (!key) return;
    if (isOpen()) {
      if (key === '?') { e.preventDefault(); close(); }
      else if (key === 'Escape' && !dialog.showModal) { e.preventDefault(); close(); }
      return; // the dialog is modal: no page shortcuts behind it
    }
    const t = e.target;
    if (isEditable(t) || nativeHandles(t, key)) return;
    const el = findTarget(key);
    if (!el) {
      if (key === '?') { e.preventDefault(); open(); }
      return;
    }
    e.preventDefault();
    if (e.repeat && isSubmit(el)) return; // holding a key must not re-submit
    flash(el);
    el.click();
  }

  document.addEventListener('keydown', onKeyDown);
  document.addEventListener('click', (e) => {
    const b = e.target.closest && e.target.closest('[data-action="shortcuts"], [data-key="?"]');
    if (b) { e.preventDefault(); toggle(); }
  });

  // --- hover previews ------------------------------------------------------------
  // <video data-hover-play> (the answer history's thumbnails) plays while the pointer is over it. Delegated
  // from the document, so rows htmx swaps in work too; no inline handlers (the site's CSP forbids them).
  function hoverVideo(e) {
    const v = e.target;
    return v && v.nodeType === 1 && v.tagName === 'VIDEO' && v.hasAttribute('data-hover-play') ? v : null;
  }
  document.addEventListener('mouseenter', (e) => {
    const v = hoverVideo(e);
    if (v) v.play().catch(() => {});
  }, true);
  document.addEventListener('mouseleave', (e) => {
    const v = hoverVideo(e);
    if (v) v.pause();
  }, true);

  // --- keyboard play ---------------------------------------------------------------
  // <video data-toggle-play tabindex="0" role="button">: Enter or Space plays or pauses it (a click too). Runs in
  // the capture phase and marks the event handled, so the page's shortcuts (Space = play/pause the comparison)
  // don't also act on it.
  function togglePlay(v) {
    if (v.paused) v.play().catch(() => {});
    else v.pause();
  }
  document.addEventListener('keydown', (e) => {
    const v = e.target;
    if (!v || v.nodeType !== 1 || v.tagName !== 'VIDEO' || !v.hasAttribute('data-toggle-play')) return;
    if ((e.key !== 'Enter' && e.key !== ' ') || e.ctrlKey || e.metaKey || e.altKey) return;
    e.preventDefault();
    if (!e.repeat) togglePlay(v);
  }, true);
  document.addEventListener('click', (e) => {
    const v = e.target;
    if (v && v.nodeType === 1 && v.tagName === 'VIDEO' && v.hasAttribute('data-toggle-play')) togglePlay(v);
  });
  for (const type of ['play', 'pause']) {
    document.addEventListener(type, (e) => {
      const v = e.target;
      if (v && v.hasAttribute && v.hasAttribute('data-toggle-play')) v.setAttribute('aria-pressed', String(type === 'play'));
    }, true);
  }

  Heronry.keys = { open, close, toggle, isOpen, list, findTarget };
})();
