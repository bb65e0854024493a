/*
 * Heronry factor-ranking board. Plain ES2020 script; exposes window.Heronry.ranking.
 *
 * <form data-ranking-board>                       one board (initialised on DOMContentLoaded and htmx:load)
 *   <input type="hidden" name="groups">           kept in sync: JSON list of levels, each a list of factor keys
 *   <ol data-role="levels" class="rank-levels">   the levels, most important first
 *     <li class="rank-level" data-level>          one level (a tie group when it holds several factors)
 *       <ul data-role="factors" class="rank-factors">
 *         <li class="rank-factor" data-factor-key="…" tabindex="0">  one factor card (.factor-label = its name)
 *
 * The script adds, and keeps right after every change: a heading per level (.rank-level-head),
 * drop zones between levels (.rank-gap > .rank-gap-list; dropping there makes a new level),
 * small move buttons per card, one σ help line per board, an aria-live region for announcements.
 * Empty levels are removed at once.
 *
 * Keys on a focused card (not while typing in its σ field):
 *   ↑ / ↓                      previous / next card          Home / End   first / last card
 *   Alt+↑ / Alt+↓, Shift+↑ / Shift+↓, K / J
 *                              move one level up / down (a lone factor swaps levels with its neighbour;
 *                              a tied factor leaves its group for a new level just above / below it)
 *   T or =                     tie with the level above      U            untie (new level just below)
 *   Ctrl+Enter / ⌘+Enter       submit (anywhere in the form, or when nothing else has focus)
 *
 * API: Heronry.ranking.state(form) -> [["key", …], …]; init(root?); refresh(form);
 *      act(form, key, action) with action "up" | "down" | "tie" | "untie" (returns the announcement).
 */
(function () {
  'use strict';

  const Heronry = (window.Heronry = window.Heronry || {});
  if (Heronry.ranking) return;

  const BOARD = '[data-ranking-board]';
  const LEVELS = '[data-role="levels"], .rank-levels';
  const LEVEL = '.rank-level, [data-level]';
  const LIST = '[data-role="factors"], .rank-factors';
  const CARD = '.rank-factor, [data-factor-key]';
  const GAP = '.rank-gap';
  const GAP_LIST = '.rank-gap-list';
  const SIGMA_HELP =
    'σ sets how large a difference must be before it counts: σ=1 means one standard deviation of this ' +
    'factor across clips; larger σ = only big differences decide; 0 = any difference decides.';

  const boards = new WeakMap(); // form -> {sortables: Set<Sortable>, live: Element, seq: number}
  let uid = 0;

  const $$ = (root, sel) => Array.from(root.querySelectorAll(sel));
  const reducedMotion = () => !!(window.matchMedia && window.matchMedia('(prefers-reduced-motion: reduce)').matches);

  // --- reading the board --------------------------------------------------------
  function levelsRoot(form) {
    return form.querySelector(LEVELS);
  }

  function levelEls(form) {
    const root = levelsRoot(form);
    if (!root) return [];
    return $$(root, LEVEL).filter((el) => !el.matches(GAP) && !el.parentElement.closest(LEVEL));
  }

  function listOf(level) {
    return level.matches(LIST) ? level : level.querySelector(LIST);
  }

  function cardsIn(list) {
    return list ? Array.from(list.children).filter((el) => el.matches(CARD)) : [];
  }

  function allCards(form) {
    const root = levelsRoot(form);
    return root ? $$(root, CARD).filter((el) => !el.closest(GAP)) : [];
  }

  const keyOf = (card) => card.getAttribute('data-factor-key');

  function labelOf(card) {
    const l = card.querySelector('.factor-label');
    const text = l ? l.textContent.replace(/\s+/g, ' ').trim() : '';
    return text || keyOf(card);
  }

  const levelOf = (card) => card.closest(LEVEL);

  // Levels in order; a card dropped into a gap (before the board is tidied) counts as a level of its own.
  function readGroups(form) {
    const root = levelsRoot(form);
    if (!root) return [];
    const groups = [];
    for (const el of $$(root, `${LEVEL}, ${GAP}`)) {
      if (!el.matches(GAP) && el.parentElement.closest(LEVEL)) continue;
      const list = el.matches(GAP) ? el.querySelector(GAP_LIST) : listOf(el);
      const keys = cardsIn(list).map(keyOf).filter(Boolean);
      if (keys.length) groups.push(keys);
    }
    return groups;
  }

  function groupsInput(form) {
    let input = form.querySelector('input[name="groups"]');
    if (!input) {
      input = document.createElement('input');
      input.type = 'hidden';
      input.name = 'groups';
      form.prepend(input);
    }
    return input;
  }

  function sync(form) {
    const value = JSON.stringify(readGroups(form));
    const input = groupsInput(form);
    if (input.value !== value) {
      input.value = value;
      form.dispatchEvent(new CustomEvent('heronry:ranking-change', { bubbles: true, detail: { groups: JSON.parse(value) } }));
    }
    return value;
  }

  // --- building / tidying the board ---------------------------------------------
  function newLevel(form) {
    const model = levelEls(form)[0];
    let level;
    if (model) {
      level = model.cloneNode(true); // keeps whatever wrappers the template uses
      $$(level, `${CARD}, .rank-level-head`).forEach((el) => el.remove());
      [level, ...$$(level, '[id]')].forEach((el) => el.removeAttribute('id'));
      level.classList.remove('is-tie');
      const list = listOf(level);
      if (list) list.removeAttribute('aria-labelledby');
    }
    if (!level || !listOf(level)) {
      level = document.createElement('li');
      level.className = 'rank-level';
      level.setAttribute('data-level', '');
      const list = document.createElement('ul');
      list.className = 'rank-factors';
      list.setAttribute('data-role', 'factors');
      level.appendChild(list);
    }
    return level;
  }

  function newGap() {
    const gap = document.createElement('li');
    gap.className = 'rank-gap';
    gap.setAttribute('aria-hidden', 'true'); // a pointer drop target; the keyboard has its own moves
    const list = document.createElement('ul');
    list.className = 'rank-gap-list';
    list.setAttribute('data-role', 'gap');
    gap.appendChild(list);
    return gap;
  }

  function joinWords(words) {
    if (words.length <= 1) return words.join('');
    return words.slice(0, -1).join(', ') + ' and ' + words[words.length - 1];
  }

  function levelHead(level) {
    let head = Array.from(level.children).find((el) => el.classList.contains('rank-level-head'));
    if (!head) {
      head = document.createElement('div');
      head.className = 'rank-level-head';
      head.innerHTML =
        '<span class="rank-level-num"><span class="visually-hidden">Level </span><span data-role="num"></span></span>' +
        '<span class="rank-level-note" data-role="note"></span><span class="rank-level-tie" data-role="tie"></span>';
      level.prepend(head);
    }
    if (!head.id) head.id = `rank-level-head-${++uid}`;
    return head;
  }

  function cardTools(card) {
    let tools = card.querySelector('.rank-factor-tools');
    if (tools) return tools;
    tools = document.createElement('span');
    tools.className = 'rank-factor-tools';
    const buttons = [
      ['up', '↑', 'Move up a level (Alt+↑)'],
      ['down', '↓', 'Move down a level (Alt+↓)'],
      ['tie', 'Tie', 'Tie with the level above (T)'],
      ['untie', 'Untie', 'Untie: own level below (U)'],
    ];
    for (const [action, text, title] of buttons) {
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'rank-tool';
      b.tabIndex = -1; // the card's own keys do the same; keep one tab stop per card
      b.setAttribute('data-rank-action', action);
      b.title = title;
      b.setAttribute('aria-label', title.replace(/\s*\([^)]*\)$/, ''));
      b.textContent = text;
      tools.appendChild(b);
    }
    const head = card.querySelector('.rank-factor-head');
    (head || card).appendChild(tools);
    return tools;
  }

  // One σ explanation per board (the page's #sigma-help, or one made here), pointed at by every σ field:
  // the same sentence under each card said it three times.
  function sigmaHelp(card) {
    const input = card.querySelector('input[name^="sigma"]');
    const form = card.closest(BOARD);
    if (!input || !form) return;
    let help = form.querySelector('.factor-sigma-help');
    if (!help) {
      help = document.createElement('p');
      help.className = 'factor-sigma-help';
      help.id = `sigma-help-${++uid}`;
      help.textContent = SIGMA_HELP;
      const levels = levelsRoot(form);
      if (levels) levels.after(help);
      else form.appendChild(help);
    }
    const described = (input.getAttribute('aria-describedby') || '').split(/\s+/).filter(Boolean);
    if (!described.includes(help.id)) described.push(help.id);
    input.setAttribute('aria-describedby', described.join(' '));
  }

  function sortableOptions(form, isGap) {
    const board = boards.get(form);
    return {
      group: { name: board.group, pull: true, put: true },
      draggable: '.rank-factor',
      filter: 'input, textarea, select, button, a, video, label, .factor-sigma, .factor-sigma-help',
      preventOnFilter: false,
      forceFallback: true, // pointer-driven: same on mouse, pen and touch (and scriptable in tests)
      fallbackOnBody: true,
      fallbackTolerance: 4,
      fallbackClass: 'rank-drag-ghost',
      delay: 180, // touch: press and hold to drag, so a swipe still scrolls the page
      delayOnTouchOnly: true,
      touchStartThreshold: 6,
      animation: reducedMotion() ? 0 : 150,
      ghostClass: 'rank-placeholder',
      chosenClass: 'is-chosen',
      dragClass: 'is-dragged',
      emptyInsertThreshold: isGap ? 14 : 8,
      swapThreshold: 0.65,
      scroll: true,
      bubbleScroll: true,
      scrollSensitivity: 70,
      scrollSpeed: 14,
      onStart(evt) {
        board.dragging = true;
        board.before = JSON.stringify(readGroups(form));
        board.hadFocus = document.activeElement === evt.item;
        form.classList.add('is-dragging');
      },
      onEnd(evt) {
        board.dragging = false;
        form.classList.remove('is-dragging');
        const card = evt.item;
        sync(form); // the hidden field is right at once; the tidying waits until Sortable has finished
        setTimeout(() => {
          refresh(form);
          if (board.hadFocus && card.isConnected) card.focus({ preventScroll: true });
          if (JSON.stringify(readGroups(form)) !== board.before && card.isConnected) announce(form, positionText(form, card));
        }, 0);
      },
    };
  }

  function ensureSortables(form) {
    const board = boards.get(form);
    for (const s of Array.from(board.sortables)) {
      if (!s.el || !form.contains(s.el)) {
        board.sortables.delete(s);
        if (s.el) s.destroy();
      }
    }
    const S = window.Sortable;
    if (!S) return;
    const root = levelsRoot(form);
    if (!root) return;
    for (const level of levelEls(form)) {
      const list = listOf(level);
      if (list && !S.get(list)) board.sortables.add(S.create(list, sortableOptions(form, false)));
    }
    for (const list of $$(root, GAP_LIST)) {
      if (!S.get(list)) board.sortables.add(S.create(list, sortableOptions(form, true)));
    }
  }

  function removeGap(form, gap) {
    const list = gap.querySelector(GAP_LIST);
    const s = list && window.Sortable && window.Sortable.get(list);
    if (s) {
      boards.get(form).sortables.delete(s);
      s.destroy();
    }
    gap.remove();
  }

  function removeLevel(form, level) {
    const list = listOf(level);
    const s = list && window.Sortable && window.Sortable.get(list);
    if (s) {
      boards.get(form).sortables.delete(s);
      s.destroy();
    }
    level.remove();
  }

  // Make the DOM canonical: cards dropped into gaps become levels, empty levels go, one gap between
  // (and around) the levels, headings/labels/buttons right, the hidden field in sync.
  function refresh(form) {
    if (!boards.has(form)) return init(form);
    const root = levelsRoot(form);
    if (!root) return;
    const focused = document.activeElement;

    // 1. cards sitting in gaps -> a new level at that place
    for (const gap of $$(root, GAP)) {
      const cards = cardsIn(gap.querySelector(GAP_LIST));
      if (cards.length) {
        const level = newLevel(form);
        gap.parentNode.insertBefore(level, gap);
        const list = listOf(level);
        cards.forEach((c) => list.appendChild(c));
      }
    }
    // 2. drop empty levels
    for (const level of levelEls(form)) if (!cardsIn(listOf(level)).length) removeLevel(form, level);
    // 3. exactly one gap before, between and after the levels
    $$(root, GAP).forEach((g) => removeGap(form, g));
    const levels = levelEls(form);
    for (const level of levels) level.parentNode.insertBefore(newGap(), level);
    if (levels.length) {
      const last = levels[levels.length - 1];
      last.parentNode.insertBefore(newGap(), last.nextSibling);
    }
    // 4. headings, tie marks, labels, per-card extras
    const n = levels.length;
    levels.forEach((level, i) => {
      const list = listOf(level);
      const cards = cardsIn(list);
      const head = levelHead(level);
      head.querySelector('[data-role="num"]').textContent = String(i + 1);
      let note = '';
      if (n > 1 && i === 0) note = 'most important';
      else if (n > 1 && i === n - 1) note = 'least important';
      else if (n === 1) note = 'all equally important';
      head.querySelector('[data-role="note"]').textContent = note;
      head.querySelector('[data-role="tie"]').textContent = cards.length > 1 ? `tie · ${cards.length} factors` : '';
      level.classList.toggle('is-tie', cards.length > 1);
      level.setAttribute('data-position', String(i + 1));
      list.setAttribute('aria-labelledby', head.id);
      for (const card of cards) {
        const others = cards.filter((c) => c !== card).map(labelOf);
        card.setAttribute(
          'aria-label',
          `${labelOf(card)}, level ${i + 1} of ${n}` + (others.length ? `, tied with ${joinWords(others)}` : '')
        );
        const tools = cardTools(card);
        const alone = cards.length === 1;
        const set = (action, disabled) => {
          const b = tools.querySelector(`[data-rank-action="${action}"]`);
          if (b) b.disabled = disabled;
        };
        set('up', alone && i === 0);
        set('down', alone && i === n - 1);
        set('tie', i === 0);
        set('untie', alone);
        sigmaHelp(card);
      }
    });
    ensureSortables(form);
    sync(form);
    if (focused && focused !== document.activeElement && focused.isConnected && form.contains(focused)) {
      focused.focus({ preventScroll: true });
    }
  }

  // --- announcements --------------------------------------------------------------
  function liveRegion(form) {
    const board = boards.get(form);
    if (board.live && board.live.isConnected) return board.live;
    let live = form.querySelector('[data-role="ranking-live"]');
    if (!live) {
      live = document.createElement('div');
      live.className = 'visually-hidden';
      live.setAttribute('data-role', 'ranking-live');
      live.setAttribute('aria-live', 'polite');
      live.setAttribute('aria-atomic', 'true');
      form.appendChild(live);
    }
    board.live = live;
    return live;
  }

  function announce(form, text) {
    const live = liveRegion(form);
    // A repeated message must still change the region's text to be read again.
    live.textContent = live.textContent === text ? text + '\u00a0' : text;
    return text;
  }

  function positionText(form, card) {
    const levels = levelEls(form);
    const level = levelOf(card);
    const i = levels.indexOf(level);
    const others = cardsIn(listOf(level)).filter((c) => c !== card).map(labelOf);
    const where = `level ${i + 1} of ${levels.length}`;
    return others.length
      ? `${labelOf(card)} now tied with ${joinWords(others)} at ${where}`
      : `${labelOf(card)} moved to ${where}`;
  }

  // --- moves ----------------------------------------------------------------------------
  function act(form, card, action) {
    if (typeof card === 'string') card = allCards(form).find((c) => keyOf(c) === card);
    if (!card || !boards.has(form)) return '';
    const levels = levelEls(form);
    const level = levelOf(card);
    const i = levels.indexOf(level);
    if (i < 0) return '';
    const list = listOf(level);
    const alone = cardsIn(list).length === 1;
    const name = labelOf(card);
    let message = '';

    if (action === 'up') {
      if (alone && i === 0) message = `${name} is already at level 1, the most important`;
      else if (alone) levels[i - 1].before(level);
      else {
        const fresh = newLevel(form);
        level.before(fresh);
        listOf(fresh).appendChild(card);
      }
    } else if (action === 'down') {
      if (alone && i === levels.length - 1) message = `${name} is already at the last level, the least important`;
      else if (alone) levels[i + 1].after(level);
      else {
        const fresh = newLevel(form);
        level.after(fresh);
        listOf(fresh).appendChild(card);
      }
    } else if (action === 'tie') {
      if (i === 0) message = `${name} is at level 1: there is no level above to tie with`;
      else listOf(levels[i - 1]).appendChild(card);
    } else if (action === 'untie') {
      if (alone) message = `${name} is not tied with another factor`;
      else {
        const fresh = newLevel(form);
        level.after(fresh);
        listOf(fresh).appendChild(card);
      }
    } else {
      return '';
    }

    if (!message) {
      refresh(form);
      message = positionText(form, card);
      if (action === 'untie') message = message.replace(' moved to ', ' untied, now alone at ');
    }
    if (document.activeElement !== card) card.focus({ preventScroll: true });
    card.scrollIntoView({ block: 'nearest', behavior: reducedMotion() ? 'auto' : 'smooth' });
    return announce(form, message);
  }

  function focusCard(form, card, where) {
    const cards = allCards(form);
    const i = cards.indexOf(card);
    let target = null;
    if (where === 'prev') target = cards[i - 1];
    else if (where === 'next') target = cards[i + 1];
    else if (where === 'first') target = cards[0];
    else if (where === 'last') target = cards[cards.length - 1];
    if (target) {
      target.focus({ preventScroll: true });
      target.scrollIntoView({ block: 'nearest' });
    }
  }

  // --- events ------------------------------------------------------------------------------
  function submit(form) {
    refresh(form);
    const button = form.querySelector('button[type="submit"], input[type="submit"], button:not([type])');
    if (typeof form.requestSubmit === 'function') form.requestSubmit(button || undefined);
    else if (button) button.click();
    else form.submit();
  }

  const ACTION_KEYS = { k: 'up', K: 'up', j: 'down', J: 'down', t: 'tie', T: 'tie', '=': 'tie', u: 'untie', U: 'untie' };

  function onKeyDown(e) {
    const form = e.currentTarget;
    if (e.defaultPrevented || e.isComposing) return;
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      if (!e.repeat) submit(form);
      return;
    }
    const card = e.target;
    if (!card || card.nodeType !== 1 || !card.matches(CARD) || !form.contains(card)) return; // e.g. typing in σ
    if (e.ctrlKey || e.metaKey || boards.get(form).dragging) return;
    const moveMod = e.altKey || e.shiftKey;
    let action = null;
    if (e.key === 'ArrowUp') action = moveMod ? 'up' : 'prev';
    else if (e.key === 'ArrowDown') action = moveMod ? 'down' : 'next';
    else if (e.altKey) return;
    else if (e.key === 'Home') action = 'first';
    else if (e.key === 'End') action = 'last';
    else action = ACTION_KEYS[e.key] || null;
    if (!action) return;
    e.preventDefault(); // also keeps keys.js (listening on document) from acting on the key
    if (action === 'prev' || action === 'next' || action === 'first' || action === 'last') focusCard(form, card, action);
    else act(form, card, action);
  }

  function onClick(e) {
    const b = e.target.closest && e.target.closest('[data-rank-action]');
    if (!b || !e.currentTarget.contains(b)) return;
    e.preventDefault();
    const card = b.closest(CARD);
    if (card) act(e.currentTarget, card, b.getAttribute('data-rank-action'));
  }

  function init(root) {
    const scope = root && root.nodeType === 1 ? root : document;
    const forms = scope.matches && scope.matches(BOARD) ? [scope] : $$(scope, BOARD);
    if (scope !== document && scope.closest) {
      const outer = scope.closest(BOARD);
      if (outer && !forms.includes(outer)) forms.push(outer);
    }
    for (const form of forms) {
      if (!boards.has(form)) {
        boards.set(form, { sortables: new Set(), live: null, group: `heronry-ranking-${++uid}`, dragging: false });
        form.addEventListener('keydown', onKeyDown);
        form.addEventListener('click', onClick);
        form.addEventListener('submit', () => sync(form), true);
        liveRegion(form);
        if (!window.Sortable) console.warn('Heronry ranking: Sortable.js is not loaded; drag and drop is off.');
      }
      refresh(form);
    }
  }

  // Ctrl+Enter with nothing in particular focused (e.g. right after the page loads) submits the board.
  document.addEventListener('keydown', (e) => {
    if (e.defaultPrevented || e.key !== 'Enter' || !(e.ctrlKey || e.metaKey) || e.repeat) return;
    const t = e.target;
    if (t && t.nodeType === 1 && t !== document.body && t !== document.documentElement && t.closest('form, dialog')) return;
    const forms = $$(document, BOARD).filter((f) => boards.has(f));
    if (forms.length !== 1) return;
    e.preventDefault();
    submit(forms[0]);
  });

  document.addEventListener('htmx:load', (e) => init((e.detail && e.detail.elt) || e.target));
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', () => init(document));
  else init(document);
  // Sortable loaded later than this script: add drag and drop once everything is in.
  window.addEventListener('load', () => $$(document, BOARD).forEach((f) => boards.has(f) && ensureSortables(f)));

  Heronry.ranking = {
    init,
    refresh,
    state: (form) => readGroups(form || document.querySelector(BOARD)),
    act: (form, card, action) => act(form || document.querySelector(BOARD), card, action),
  };
})();
