/*
 * Heronry synchronised clip player.
 *
 * Plain ES2020 script (no modules, no build step). Exposes window.Heronry.player.
 * Markup contract: see the element with [data-sync-player] in the comparison
 * template (two <video data-side="left|right">, and [data-action] / [data-role]
 * controls).
 *
 * Clock design: one of the two <video> elements is the MASTER clock and the
 * other FOLLOWS it. The master is the longer clip (the left one when the two
 * are within half a frame of each other), so the clock keeps running while the
 * shorter clip holds its last frame. A video element as the clock (rather than
 * a requestAnimationFrame wall clock) means buffering stalls the clock by
 * itself instead of racing ahead of the picture. A requestAnimationFrame loop
 * (only while playing) keeps the follower within half a frame (1 / (2 * fps)):
 *   - small drift: nudge the follower's playbackRate by up to +-20 % until it
 *     has caught up (no visible jump);
 *   - large drift (> 0.1 s, e.g. after a stall): seek the follower;
 *   - while either needed clip is seeking or starved of data, both are held
 *     (paused) and resume together, so seeks and loops restart in step.
 * When paused (button, frame step, scrubber) the follower is seeked to exactly
 * the master's time, so paused frames always match.
 */
(function () {
  'use strict';

  const Heronry = (window.Heronry = window.Heronry || {});
  if (Heronry.player) return; // script included twice

  const HAVE_FUTURE_DATA = 3;
  const BIG_DRIFT = 0.1; // seconds: seek instead of nudging the rate
  const MAX_NUDGE = 0.2; // max relative playbackRate change while catching up
  const END_MARGIN = 0.25; // a clip this close to its end may report less data
  const players = new WeakMap(); // element -> controller (the truth for "initialised")
  const live = new Set();
  let observer = null;

  const clamp = (x, lo, hi) => Math.min(hi, Math.max(lo, x));
  const dur = (v) => (v && Number.isFinite(v.duration) && v.duration > 0 ? v.duration : 0);
  const fmt = (s) => (Number.isFinite(s) ? s : 0).toFixed(1);

  function create(el) {
    const fpsAttr = parseFloat(el.dataset.fps);
    const fps = Number.isFinite(fpsAttr) && fpsAttr > 0 ? fpsAttr : 30;
    const frame = 1 / fps;
    const half = frame / 2;
    const q = (sel) => el.querySelector(sel);
    const vids = [q('video[data-side="left"]'), q('video[data-side="right"]')];
    if (!vids[0] && !vids[1]) {
      const all = el.querySelectorAll('video');
      vids[0] = all[0] || null;
      vids[1] = all[1] || null;
    }
    const btnPlay = q('[data-action="play-pause"]');
    const scrub = q('[data-role="scrubber"]');
    const speedSel = q('[data-role="speed"]');
    const loopBox = q('[data-role="loop"]');
    const timeEl = q('[data-role="time"]');
    const ac = new AbortController();
    const on = (target, type, fn, opts) =>
      target && target.addEventListener(type, fn, Object.assign({ signal: ac.signal }, opts));

    let master = null;
    let follower = null;
    let playing = false;
    let raf = 0;
    let rate = speedSel ? parseFloat(speedSel.value) || 1 : 1;
    let correcting = false;
    let scrubbing = false;
    let resumeAfterScrub = false;
    let lastTimeText = '';
    let lastSeek = null; // exact target of the last seek (currentTime is rounded to µs)
    const watched = new Set();
    const lastPlayed = new WeakMap(); // video -> last currentTime seen while it was playing
    let watchedFired = false;
    const objectUrls = [];

    const usable = (v) => !!v && !v.error;
    const usableVids = () => vids.filter(usable);

    function pickMaster() {
      const [l, r] = vids;
      let m = usable(l) ? l : usable(r) ? r : null;
      if (usable(l) && usable(r) && dur(r) > dur(l) + half) m = r;
      master = m;
      follower = m ? (m === l ? r : l) : null;
      if (!usable(follower)) follower = null;
      if (master) el.dataset.master = master.dataset.side || '';
    }

    const duration = () => Math.max(dur(vids[0]), dur(vids[1]));
    const now = () => (master ? master.currentTime : 0);
    const loopOn = () => (loopBox ? loopBox.checked : el.dataset.loop !== 'false');
    // Does the follower still have frames to show at master time t?
    const followerNeeded = (t) => !!follower && (!dur(follower) || t < dur(follower) - half);
    // Seeking, or starved of data (and not simply at its own end).
    const notReady = (v) =>
      !v.ended && (v.seeking || (v.readyState < HAVE_FUTURE_DATA && !(dur(v) && v.currentTime >= dur(v) - END_MARGIN)));

    // A server without HTTP Range support makes Chromium report the clip as
    // unseekable (seekable = [0, 0]): scrubbing, stepping and looping would
    // snap to 0. Clips are small, so fetch the file once and play it from a
    // blob: URL instead (the original URL stays in data-original-src).
    function ensureSeekable(v) {
      if (!window.fetch || v.hasAttribute('data-original-src') || !dur(v)) return;
      const s = v.seekable;
      if ((s.length ? s.end(s.length - 1) : 0) >= dur(v) - frame) return;
      const url = v.currentSrc || v.src;
      v.setAttribute('data-original-src', v.getAttribute('src') || url);
      fetch(url, { credentials: 'same-origin' })
        .then((r) => (r.ok ? r.blob() : Promise.reject(new Error('HTTP ' + r.status))))
        .then((blob) => {
          if (ctrl.destroyed) return;
          const t = v.currentTime;
          const obj = URL.createObjectURL(blob);
          objectUrls.push(obj);
          v.src = obj;
          if (t) v.currentTime = t;
        })
        .catch(() => { /* keep playing the original, unseekable source */ });
    }

    function setRate(v, r) {
      if (v && Math.abs(v.playbackRate - r) > 1e-6) v.playbackRate = r;
    }

    function seekAll(t) {
      const D = duration();
      t = clamp(t, 0, D || t);
      lastSeek = t;
      correcting = false;
      for (const v of usableVids()) {
        const vt = dur(v) ? Math.min(t, dur(v)) : t;
        if (Math.abs(v.currentTime - vt) > 1e-6 || v.ended) v.currentTime = vt;
        setRate(v, rate);
      }
      updateUI(t);
    }

    function updateButton() {
      el.classList.toggle('is-playing', playing);
      el.dataset.state = playing ? 'playing' : 'paused';
      if (!btnPlay) return;
      const label = playing ? btnPlay.dataset.labelPause || 'Pause' : btnPlay.dataset.labelPlay || 'Play';
      const slot = btnPlay.querySelector('[data-role="label"]');
      if (slot) slot.textContent = label;
      else if (!btnPlay.firstElementChild) btnPlay.textContent = label;
    }

    function updateUI(t) {
      if (t == null) t = now();
      const D = duration();
      if (scrub && !scrubbing && D) {
        const max = parseFloat(scrub.max) || 1000;
        const min = parseFloat(scrub.min) || 0;
        const v = String(Math.round(min + (clamp(t / D, 0, 1) * (max - min))));
        if (scrub.value !== v) scrub.value = v;
        scrub.setAttribute('aria-valuetext', fmt(t) + ' of ' + fmt(D) + ' seconds');
      }
      const text = fmt(t) + ' / ' + fmt(D) + ' s';
      if (timeEl && text !== lastTimeText) timeEl.textContent = lastTimeText = text;
    }

    // Reached its end by playing (not by a seek to the end).
    const playedToEnd = (v) => !!v && dur(v) > 0 && (lastPlayed.get(v) ?? -1) >= dur(v) - END_MARGIN;

    function markWatched(v) {
      if (!v || watched.has(v)) return;
      watched.add(v);
      if (watchedFired || !usableVids().every((x) => watched.has(x))) return;
      watchedFired = true;
      el.dataset.watched = 'true';
      el.dispatchEvent(new CustomEvent('heronry:watched', { bubbles: true, detail: { player: el } }));
    }

    function onPlayError(err) {
      if (err && err.name === 'NotAllowedError') {
        playing = false; // autoplay refused: wait for the user
        updateButton();
      }
    }

    function schedule() {
      if (!raf && playing && !ctrl.destroyed) raf = requestAnimationFrame(tick);
    }

    function play() {
      if (!master) return;
      if (master.ended || (duration() && now() >= duration() - 1e-3)) seekAll(0);
      playing = true;
      updateButton();
      tick();
    }

    function pause() {
      playing = false;
      if (raf) cancelAnimationFrame(raf);
      raf = 0;
      for (const v of usableVids()) v.pause();
      if (master && follower) {
        const ft = Math.min(master.currentTime, dur(follower) || Infinity);
        if (Math.abs(follower.currentTime - ft) > 1e-6) follower.currentTime = ft;
      }
      for (const v of usableVids()) setRate(v, rate);
      correcting = false;
      updateButton();
      updateUI();
    }

    function step(dir) {
      if (!master) return;
      if (playing) pause();
      const t = now();
      const base = lastSeek !== null && Math.abs(lastSeek - t) < 1e-5 ? lastSeek : t;
      seekAll(base + dir * frame);
    }

    function atEnd() {
      if (!loopOn()) {
        pause();
        updateUI(duration());
        return;
      }
      seekAll(0); // still "playing": tick() restarts both once the seeks are done
    }

    function tick() {
      if (raf) cancelAnimationFrame(raf); // direct calls must not start a second loop
      raf = 0;
      if (!el.isConnected) return destroy();
      if (!playing || !master) return;
      const m = master;
      const f = follower;
      const t = m.currentTime;
      const D = dur(m);
      for (const v of [m, f]) if (v && !v.paused && !v.seeking) lastPlayed.set(v, v.currentTime);

      // 1. Master reached its end (the clock is the longer clip).
      if (m.ended || (D && m.paused && !m.seeking && t >= D - 1e-3)) {
        if (playedToEnd(m)) markWatched(m);
        if (playedToEnd(f)) markWatched(f);
        atEnd();
        return schedule();
      }
      const fNeeded = followerNeeded(t);
      // 2. Follower stopped (ended earlier, or master went back in time): re-seek it.
      if (fNeeded && f.paused && !f.seeking && Math.abs(f.currentTime - t) > half) f.currentTime = t;
      // 3. Hold both while either needed clip is seeking or buffering.
      if (notReady(m) || (fNeeded && notReady(f))) {
        if (!m.paused) m.pause();
        if (f && !f.paused) f.pause();
        return schedule();
      }
      // 4. Start / resume together.
      let resumed = false;
      if (m.paused) { m.play().catch(onPlayError); resumed = true; }
      if (fNeeded && f.paused) { f.play().catch(onPlayError); resumed = true; }
      // 5. Drift correction while both run.
      if (fNeeded && !resumed) {
        const d = f.currentTime - t; // > 0: follower ahead
        if (Math.abs(d) > BIG_DRIFT) {
          correcting = false;
          setRate(f, rate);
          f.currentTime = t;
        } else if (Math.abs(d) > half / 2 || (correcting && Math.abs(d) > half / 8)) {
          // Start at a quarter frame, so drift never reaches half a frame.
          correcting = true;
          // Close the gap in about half a second of wall time.
          const nudge = clamp(Math.round((-2 * d / rate) * 200) / 200, -MAX_NUDGE, MAX_NUDGE);
          setRate(f, rate * (1 + nudge));
        } else if (correcting) {
          correcting = false;
          setRate(f, rate);
        }
      }
      if (f && !f.paused && dur(f) && f.currentTime >= dur(f) - frame) markWatched(f);
      updateUI(t);
      schedule();
    }

    function toggle() {
      if (playing) pause();
      else play();
    }

    function scrubTo() {
      const D = duration();
      if (!D) return;
      const max = parseFloat(scrub.max) || 1000;
      const min = parseFloat(scrub.min) || 0;
      seekAll(((parseFloat(scrub.value) - min) / (max - min)) * D);
    }

    function endScrub() {
      if (!scrubbing) return;
      scrubbing = false;
      // Give arrow-key shortcuts back to the page after a mouse/touch scrub.
      if (document.activeElement === scrub) scrub.blur();
      if (resumeAfterScrub) play();
      resumeAfterScrub = false;
    }

    function destroy() {
      if (ctrl.destroyed) return;
      ctrl.destroyed = true;
      if (raf) cancelAnimationFrame(raf);
      raf = 0;
      playing = false;
      ac.abort();
      for (const v of usableVids()) v.pause();
      objectUrls.forEach((u) => URL.revokeObjectURL(u));
      live.delete(ctrl);
      players.delete(el);
      if (!live.size && observer) { observer.disconnect(); observer = null; }
    }

    const ctrl = {
      el,
      destroyed: false,
      play,
      pause,
      toggle,
      step,
      seek: (t) => seekAll(t),
      destroy,
      state() {
        const t = now();
        const ft = follower ? follower.currentTime : t;
        const expected = follower ? Math.min(t, dur(follower) || t) : t;
        return {
          time: t,
          drift: Math.abs(ft - expected),
          signedDrift: ft - expected,
          paused: !playing,
          duration: duration(),
          left: vids[0] ? vids[0].currentTime : null,
          right: vids[1] ? vids[1].currentTime : null,
          master: master ? master.dataset.side || null : null,
          rate,
          fps,
          watched: watchedFired,
        };
      },
    };

    // --- wiring -----------------------------------------------------------
    for (const v of vids) {
      if (!v) continue;
      v.loop = false; // looping is ours, so both restart together
      v.muted = true; // required for autoplay; clips have no sound
      v.defaultPlaybackRate = rate;
      v.playbackRate = rate;
      // Restored from an htmx history snapshot: the blob: URL is gone.
      if (v.hasAttribute('data-original-src') && (v.getAttribute('src') || '').startsWith('blob:')) {
        v.src = v.getAttribute('data-original-src');
        v.removeAttribute('data-original-src');
      }
      on(v, 'loadedmetadata', () => { pickMaster(); updateUI(); ensureSeekable(v); });
      on(v, 'durationchange', () => { pickMaster(); updateUI(); });
      on(v, 'ended', () => {
        if (playing && playedToEnd(v)) markWatched(v);
        if (v === master) tick();
      });
      on(v, 'seeked', () => { if (!playing) updateUI(); });
      on(v, 'error', () => {
        const fig = v.closest('figure');
        if (fig) fig.classList.add('clip-error');
        watched.delete(v);
        pickMaster();
        if (playing) tick();
      });
    }

    on(el, 'click', (e) => {
      const b = e.target.closest('[data-action]');
      if (!b || !el.contains(b)) return;
      const a = b.dataset.action;
      if (a === 'play-pause') toggle();
      else if (a === 'step-back') step(-1);
      else if (a === 'step-forward') step(1);
    });
    // Clicking a player button or the loop box must not move focus there, so
    // Space keeps meaning play/pause afterwards (the toolbar pattern).
    on(el, 'mousedown', (e) => {
      const t = e.target;
      const label = t.closest('label');
      if (t.closest('button[data-action], [data-role="loop"]') || (label && label.contains(loopBox))) e.preventDefault();
    });

    if (scrub) {
      on(scrub, 'pointerdown', () => {
        scrubbing = true;
        resumeAfterScrub = playing;
        if (playing) pause();
      });
      on(scrub, 'input', () => {
        scrubTo();
        if (!scrubbing && playing) tick();
      });
      on(scrub, 'change', endScrub);
      on(document, 'pointerup', endScrub);
      on(document, 'pointercancel', endScrub);
    }
    if (speedSel) {
      on(speedSel, 'change', () => {
        rate = parseFloat(speedSel.value) || 1;
        correcting = false;
        for (const v of usableVids()) { v.defaultPlaybackRate = rate; setRate(v, rate); }
      });
    }
    // After a mouse/touch change of the speed or loop control, give focus back
    // to the page so the keyboard shortcuts (Space, arrows) work again.
    // Keyboard users keep their focus.
    let pointerUsed = false;
    on(el, 'pointerdown', () => { pointerUsed = true; }, { capture: true });
    on(el, 'keydown', () => { pointerUsed = false; }, { capture: true });
    on(el, 'change', (e) => {
      const t = e.target;
      if (pointerUsed && (t === speedSel || t === loopBox) && document.activeElement === t) t.blur();
    });

    pickMaster();
    updateButton();
    updateUI();
    return ctrl;
  }

  // --- watch-before-answer gate --------------------------------------------
  function unlockAnswers(scope) {
    const gated = scope.querySelectorAll('[data-requires-watch]');
    for (const b of gated) {
      if (b.disabled) { b.disabled = false; b.setAttribute('data-watch-unlocked', ''); }
    }
  }

  document.addEventListener('heronry:watched', (e) => {
    const scope = e.target.closest && e.target.closest('[data-compare]');
    if (!scope) return;
    const all = scope.querySelectorAll('[data-sync-player]');
    for (const p of all) if (p.dataset.watched !== 'true') return;
    unlockAnswers(scope);
  });

  // --- preloading the next pair --------------------------------------------
  const preloaded = new Map(); // url -> off-DOM <video>
  const PRELOAD_KEEP = 4;

  // <link rel="preload" as="video"> is not supported by Chromium (it only logs
  // a warning), so off-DOM <video preload="auto"> elements warm the cache.
  function preload(urls) {
    for (const raw of urls || []) {
      if (!raw) continue;
      let url;
      try { url = new URL(raw, document.baseURI).href; } catch (_) { continue; }
      if (preloaded.has(url)) continue;
      const v = document.createElement('video');
      v.muted = true;
      v.preload = 'auto';
      v.src = url;
      v.load();
      preloaded.set(url, v);
    }
    while (preloaded.size > PRELOAD_KEEP) {
      const [oldUrl, old] = preloaded.entries().next().value;
      preloaded.delete(oldUrl);
      old.removeAttribute('src');
      old.load();
    }
  }

  const seenTemplates = new WeakSet();
  function preloadTemplates(root) {
    const tpls = [];
    if (root.matches && root.matches('template[data-preload]')) tpls.push(root);
    if (root.querySelectorAll) tpls.push(...root.querySelectorAll('template[data-preload]'));
    const urls = [];
    for (const tpl of tpls) {
      if (seenTemplates.has(tpl)) continue;
      seenTemplates.add(tpl);
      for (const a of tpl.content.querySelectorAll('a[href], [data-src]')) {
        urls.push(a.getAttribute('href') || a.getAttribute('data-src'));
      }
    }
    if (!urls.length) return;
    // Let the clips on screen load first.
    const current = Array.from(document.querySelectorAll('[data-sync-player] video'));
    const ready = () => current.every((v) => v.readyState >= HAVE_FUTURE_DATA || v.error);
    let waited = 0;
    (function wait() {
      if (ready() || waited >= 3000) return preload(urls);
      waited += 250;
      setTimeout(wait, 250);
    })();
  }

  // --- init / cleanup --------------------------------------------------------
  function watchRemovals() {
    if (observer || !document.documentElement) return;
    observer = new MutationObserver(() => {
      for (const p of Array.from(live)) if (!p.el.isConnected) p.destroy();
    });
    observer.observe(document.documentElement, { childList: true, subtree: true });
  }

  function initOne(el) {
    if (players.has(el)) return players.get(el);
    // A fresh element carrying our client-side state came from an htmx
    // history snapshot: the clips have to be watched again.
    const scope = el.closest('[data-compare]');
    if (scope) {
      const relocked = scope.querySelectorAll('[data-requires-watch][data-watch-unlocked]');
      if (relocked.length) {
        for (const b of relocked) { b.disabled = true; b.removeAttribute('data-watch-unlocked'); }
        delete el.dataset.watched;
      }
    }
    const ctrl = create(el);
    players.set(el, ctrl);
    live.add(ctrl);
    el.setAttribute('data-sync-player-ready', '');
    watchRemovals();
    if (el.dataset.watched === 'true' && scope) unlockAnswers(scope);
    if (el.dataset.autoplay !== 'false') ctrl.play();
    return ctrl;
  }

  function init(root) {
    root = root || document;
    const els = [];
    if (root.matches && root.matches('[data-sync-player]')) els.push(root);
    if (root.querySelectorAll) els.push(...root.querySelectorAll('[data-sync-player]'));
    els.forEach(initOne);
    preloadTemplates(root);
  }

  const get = (el) => players.get(el) || null;

  Heronry.player = {
    init,
    preload,
    get,
    state: (el) => {
      const p = get(el);
      return p ? p.state() : null;
    },
    play: (el) => get(el) && get(el).play(),
    pause: (el) => get(el) && get(el).pause(),
    step: (el, n) => get(el) && get(el).step(n || 1),
    seek: (el, t) => get(el) && get(el).seek(t),
    destroy: (el) => get(el) && get(el).destroy(),
  };

  document.addEventListener('htmx:load', (e) => init(e.detail && e.detail.elt ? e.detail.elt : e.target));
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', () => init(document));
  else init(document);
})();
