// Talking to an agent: the microphone (getUserMedia → the pcm-worklet AudioWorklet → 16 kHz
// 16-bit PCM, binary frames every 100 ms) over /ws/agents/<id>/talk/; the agent's audio comes
// back as binary frames of 16 kHz PCM, played without gaps by the pcm-player AudioWorklet in a
// 16 kHz AudioContext, and dropped at once on an "interruption" event (barge-in). Both sides'
// transcript: the user's partials grey, the interrupted agent turn tagged and cut to what was
// played. A socket that drops (any close but 1000, a deliberate end, or 4400–4499, a refusal)
// is reopened with ?resume=<conversation_id> with back-off for up to 20 s; the microphone's
// frames captured meanwhile are sent once the server says "resumed", then the events and audio
// it produced while the socket was down come in and the conversation carries on.
//
// Tests read the panel's `talk` object (also window.chorusTalk): samples played and received,
// the current socket, the conversation id, each interruption's timings (performance.now():
// the frame's arrival and the player's report that it is silent), the microphone's speech
// onsets and the player's output level.
(function () {
  "use strict";

  const CLOSED = {
    4400: "The server could not take the request.",
    4401: "You are signed out: sign in again to talk.",
    4402: "The workspace's budget or credits are spent.",
    4403: "You cannot talk to this agent.",
    4409: "The conversation has ended.",
    4500: "The conversation failed in Chorus.",
  };
  const RECONNECT_FOR_MS = 20000; // how long a dropped socket is tried again
  const RETRY_FIRST_MS = 250, RETRY_MAX_MS = 4000;
  const ONSET_LEVEL = 0.02; // a microphone sample above this after ≥ 0.5 s below is an onset
  const QUIET_FRAMES = 5;
  const KEEP = 50; // interruptions and onsets kept for tests

  function socketUrl(path) {
    return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path;
  }

  function isRefusal(code) {
    return code >= 4400 && code <= 4499;
  }

  function bindTalk(root) {
    const opener = document.querySelector("[data-talk-open]");
    const status = root.querySelector("[data-talk-status]");
    const level = root.querySelector("[data-talk-level]");
    const mute = root.querySelector("[data-talk-mute]");
    const end = root.querySelector("[data-talk-end]");
    const lines = root.querySelector("[data-talk-transcript]");
    const errorBox = root.querySelector("[data-talk-error]");
    const savedNote = root.querySelector("[data-talk-saved]");
    let ws = null, mic = null, micContext = null, playContext = null, player = null;
    let muted = false, ending = false, lastError = "", partial = null, cut = null;
    let conversationId = null, resuming = false, droppedAt = 0, retries = 0, retryTimer = null;
    let pending = []; // microphone frames captured while the socket is down
    let quiet = 0, clears = 0;

    const talk = {
      played: 0, // samples of agent audio played
      received: 0, // samples of agent audio received
      conversationId: null,
      socket: () => ws,
      interruptions: [], // {id, received, silent, dropped, outputLatency} (ms, samples, s)
      onsets: [], // performance.now() of the microphone's speech onsets
      drops: [], // {at, code, resumed} per dropped socket
      outputLevel: () => 0, // the player's output peak now (an analyser on it)
    };
    root.talk = window.chorusTalk = talk;
    root.talkSocket = () => ws; // the current socket (older tests)
    root.talkPlayed = 0;
    root.talkReceived = 0;

    function keep(list, item) {
      list.push(item);
      if (list.length > KEEP) list.shift();
    }

    function fail(message) {
      errorBox.hidden = false;
      errorBox.textContent = message;
    }

    function line(role, text, extra) {
      const li = document.createElement("li");
      li.className = "talk-" + role + (extra ? " " + extra : "");
      const who = document.createElement("strong");
      who.textContent = role === "user" ? "You: " : "Agent: ";
      const said = document.createElement("span");
      said.textContent = text;
      li.append(who, said);
      // A user's partial stays last: what the agent says goes above it.
      if (partial && partial.parentNode === lines && role === "agent") lines.insertBefore(li, partial);
      else lines.appendChild(li);
      li.scrollIntoView({ block: "nearest" });
      return li;
    }

    function markCut(li) {
      li.classList.add("interrupted");
      li.classList.remove("final");
      if (li.querySelector(".tag")) return;
      const tag = document.createElement("span");
      tag.className = "tag";
      tag.textContent = "interrupted";
      tag.title = "You spoke over the agent: it stopped here.";
      li.append(" ", tag);
    }

    // The agent line of the turn being played: the last agent line with no user line after it.
    function playingAgentLine() {
      for (let li = lines.lastElementChild; li; li = li.previousElementSibling) {
        if (li.classList.contains("talk-user") && !li.classList.contains("partial")) return null;
        if (li.classList.contains("talk-agent")) return li.classList.contains("interrupted") ? null : li;
      }
      return null;
    }

    function interrupted() {
      clears += 1;
      const entry = { id: clears, received: performance.now(), silent: null, dropped: null,
                      outputLatency: playContext ? playContext.outputLatency || playContext.baseLatency || 0 : 0 };
      keep(talk.interruptions, entry);
      if (player) player.port.postMessage({ clear: entry.id });
      cut = playingAgentLine() || line("agent", "…");
      markCut(cut);
      status.textContent = "Listening: the agent stopped to let you speak.";
    }

    function onEvent(event) {
      if (event.type === "conversation_initiation_metadata") {
        const id = event.conversation_initiation_metadata_event.conversation_id;
        if (resuming) {
          // A server that cannot resume started a new conversation: the dropped one is saved.
          resuming = false;
          pending = [];
          mute.disabled = end.disabled = ending;
          status.textContent = "Reconnected to a new conversation: the one before the drop is saved.";
        } else {
          status.textContent = "Connected: speak when you are ready.";
        }
        conversationId = talk.conversationId = id;
      } else if (event.type === "resumed") {
        conversationId = talk.conversationId = event.conversation_id || conversationId;
        resuming = false;
        retries = 0;
        if (talk.drops.length) talk.drops[talk.drops.length - 1].resumed = performance.now();
        status.textContent = ending ? "Saving the conversation…" : "Reconnected: the conversation goes on.";
        errorBox.hidden = true;
        mute.disabled = end.disabled = ending;
        // What the microphone heard while the socket was down, then the controls it missed.
        while (pending.length && ws.readyState === WebSocket.OPEN) ws.send(pending.shift());
        if (muted) ws.send(JSON.stringify({ type: "mute", on: true }));
        if (ending) ws.send(JSON.stringify({ type: "end" }));
      } else if (event.type === "tentative_user_transcript") {
        const text = event.tentative_user_transcription_event.user_transcript;
        if (!partial) partial = line("user", text, "partial muted");
        else partial.querySelector("span").textContent = text;
      } else if (event.type === "user_transcript") {
        const text = event.user_transcription_event.user_transcript;
        if (partial) { partial.remove(); partial = null; }
        line("user", text, "final");
      } else if (event.type === "agent_response") {
        line("agent", event.agent_response_event.agent_response, "final");
      } else if (event.type === "interruption") {
        interrupted();
      } else if (event.type === "agent_response_correction") {
        const text = event.agent_response_correction_event.corrected_agent_response;
        const li = cut || playingAgentLine() || line("agent", "");
        li.querySelector("span").textContent = text || "…";
        markCut(li);
        cut = null;
      } else if (event.type === "error") {
        // A fatal error is why the socket closes next; another is shown and the talk goes on.
        if (event.error_event.fatal) lastError = event.error_event.message;
        fail(event.error_event.message);
      } else if (event.type === "saved") {
        status.textContent = "Saved.";
        // A new query makes it a real load (a hash alone would not reload the list).
        window.location.assign(root.dataset.after + "?saved=" + encodeURIComponent(event.conversation_id) + "#conversations");
      }
    }

    function onPlayer(m) {
      const data = m.data;
      if (typeof data.played === "number") talk.played = root.talkPlayed = data.played;
      if (data.silent) {
        const entry = talk.interruptions.find((e) => e.id === data.silent);
        if (entry) { entry.silent = performance.now(); entry.dropped = data.dropped; }
      }
    }

    function onMicFrame(m) {
      const { pcm, peak } = m.data;
      const now = performance.now();
      level.value = muted ? 0 : peak;
      if (!muted) {
        if (peak >= ONSET_LEVEL && quiet >= QUIET_FRAMES) {
          // When in this 100 ms frame the speech began: the frame ended about now.
          const samples = new Int16Array(pcm);
          const limit = ONSET_LEVEL * 0x8000;
          let i = 0;
          while (i < samples.length && Math.abs(samples[i]) < limit) i++;
          keep(talk.onsets, now - ((samples.length - i) / 16000) * 1000);
        }
        quiet = peak < ONSET_LEVEL ? quiet + 1 : 0;
      }
      if (ws && ws.readyState === WebSocket.OPEN && !resuming) ws.send(pcm);
      else if (resuming && !ending && pending.length < RECONNECT_FOR_MS / 100 + 50) pending.push(pcm);
    }

    function stopAudio() {
      if (mic) mic.getTracks().forEach((t) => t.stop());
      if (micContext) micContext.close();
      if (playContext) playContext.close();
      mic = micContext = playContext = player = null;
      level.value = 0;
    }

    function finish(message) {
      clearTimeout(retryTimer);
      resuming = false;
      pending = [];
      mute.disabled = end.disabled = true;
      opener.disabled = false;
      stopAudio();
      if (message) {
        status.textContent = "Not connected.";
        fail(message);
      }
      if (conversationId && savedNote) {
        const link = savedNote.querySelector("a");
        link.href = root.dataset.after + "?saved=" + encodeURIComponent(conversationId) + "#conversations";
        savedNote.hidden = false;
        link.focus();
      } else {
        opener.focus();
      }
    }

    function open(resume) {
      const query = resume ? "?resume=" + encodeURIComponent(conversationId) : "";
      const socket = ws = new WebSocket(socketUrl(root.dataset.socket + query));
      socket.binaryType = "arraybuffer";
      socket.onopen = () => {
        if (resume) return; // the controls come back with "resumed"
        mute.disabled = end.disabled = false;
        end.focus();
      };
      socket.onmessage = (m) => {
        if (socket !== ws) return;
        if (m.data instanceof ArrayBuffer) {
          talk.received = root.talkReceived += m.data.byteLength / 2;
          if (player) player.port.postMessage({ pcm: m.data }, [m.data]);
          return;
        }
        let event;
        try { event = JSON.parse(m.data); } catch (e) { return; }
        onEvent(event);
      };
      socket.onclose = (e) => closed(socket, e);
    }

    function closed(socket, e) {
      if (socket !== ws) return;
      if (ending && e.code === 1000) { finish(); return; } // saved: the page reloads
      if (e.code === 1000) { finish(lastError || "The server ended the conversation."); return; }
      if (isRefusal(e.code)) {
        // The server's own message says why (a spent budget, the maximum length…).
        finish(lastError || "The conversation closed: " + (CLOSED[e.code] || "the server refused it.") + " (code " + e.code + ")");
        return;
      }
      // A drop: the same conversation again, if it had started and there is time left.
      if (!conversationId) {
        finish("The connection was lost before the conversation started (code " + e.code + "). Press Talk to try again.");
        return;
      }
      const now = performance.now();
      if (!resuming) {
        resuming = true;
        droppedAt = now;
        retries = 0;
        keep(talk.drops, { at: now, code: e.code, resumed: null });
        mute.disabled = true;
        end.disabled = ending;
      }
      if (now - droppedAt >= RECONNECT_FOR_MS) {
        finish("The connection was lost and could not be restored in " + RECONNECT_FOR_MS / 1000 +
               " s. The conversation is saved up to the drop.");
        return;
      }
      status.textContent = "Reconnecting…";
      const delay = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** retries, RECONNECT_FOR_MS - (now - droppedAt));
      retries += 1;
      retryTimer = setTimeout(() => open(true), delay);
    }

    async function start() {
      errorBox.hidden = true;
      errorBox.textContent = "";
      if (savedNote) savedNote.hidden = true;
      lastError = "";
      lines.textContent = "";
      partial = cut = null;
      ending = muted = resuming = false;
      conversationId = talk.conversationId = null;
      pending = [];
      quiet = 0;
      mute.setAttribute("aria-pressed", "false");
      mute.textContent = "Mute";
      root.hidden = false;
      opener.setAttribute("aria-expanded", "true");
      opener.disabled = true;
      status.textContent = "Asking for the microphone…";
      try {
        mic = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: true } });
      } catch (err) {
        fail("The microphone is not available (" + err.message + "): allow it in the browser to talk.");
        status.textContent = "Not connected.";
        opener.disabled = false;
        opener.focus();
        return;
      }
      playContext = new AudioContext({ sampleRate: 16000 });
      await playContext.audioWorklet.addModule(root.dataset.player);
      player = new AudioWorkletNode(playContext, "pcm-player", { outputChannelCount: [1] });
      player.port.onmessage = onPlayer;
      player.connect(playContext.destination);
      const analyser = playContext.createAnalyser();
      analyser.fftSize = 512;
      player.connect(analyser);
      const heard = new Float32Array(analyser.fftSize);
      talk.outputLevel = () => { // the peak of the last 32 ms the player rendered
        analyser.getFloatTimeDomainData(heard);
        return heard.reduce((peak, v) => Math.max(peak, Math.abs(v)), 0);
      };
      micContext = new AudioContext();
      await micContext.audioWorklet.addModule(root.dataset.worklet);
      const source = micContext.createMediaStreamSource(mic);
      const node = new AudioWorkletNode(micContext, "pcm-worklet");
      node.port.onmessage = onMicFrame;
      source.connect(node);
      status.textContent = "Connecting…";
      open(false);
    }

    opener.addEventListener("click", start);
    mute.addEventListener("click", () => {
      muted = !muted;
      mute.setAttribute("aria-pressed", String(muted));
      mute.textContent = muted ? "Unmute" : "Mute";
      status.textContent = muted ? "Muted: the agent hears silence." : "Listening…";
      if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "mute", on: muted }));
    });
    end.addEventListener("click", () => {
      ending = true;
      end.disabled = mute.disabled = true;
      pending = [];
      if (ws && ws.readyState === WebSocket.OPEN && !resuming) {
        status.textContent = "Saving the conversation…";
        ws.send(JSON.stringify({ type: "end" }));
      } else {
        // Sent once the socket is back ("resumed"); without it the server saves on its own.
        status.textContent = "Reconnecting to save the conversation…";
      }
    });
    root.addEventListener("keydown", (e) => {
      if (e.key === "Escape" && !end.disabled) end.click();
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("[data-talk-panel]").forEach(bindTalk);
  });
})();
