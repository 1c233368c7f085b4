// Talking to an agent: the microphone (getUserMedia → the pcm-worklet AudioWorklet → 16 kHz
// 16-bit PCM, binary frames every 100 ms) over /ws/agents/<id>/talk/; the agent's audio comes
// back as binary frames of 16 kHz PCM, played without gaps by the pcm-player AudioWorklet in a
// 16 kHz AudioContext, and dropped at once on an "interruption" event. Both sides' transcript:
// the user's partials grey, interrupted agent turns marked. A dropped socket ends the
// conversation (it is saved on the server); Talk starts a new one.
(function () {
  "use strict";

  const CLOSED = {
    4401: "You are signed out: sign in again to talk.",
    4402: "The workspace's budget or credits are spent.",
    4403: "You cannot talk to this agent.",
    4409: "The conversation has ended.",
    4500: "The conversation failed in Chorus.",
  };

  function socketUrl(path) {
    return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path;
  }

  function bindTalk(root) {
    const opener = document.querySelector("[data-talk-open]");
    const panel = root;
    const status = root.querySelector("[data-talk-status]");
    const level = root.querySelector("[data-talk-level]");
    const mute = root.querySelector("[data-talk-mute]");
    const end = root.querySelector("[data-talk-end]");
    const lines = root.querySelector("[data-talk-transcript]");
    const errorBox = root.querySelector("[data-talk-error]");
    let ws = null, mic = null, micContext = null, playContext = null, player = null;
    let muted = false, ending = false, lastError = "", partial = null, cut = null;
    root.talkPlayed = 0; // samples of agent audio played (tests read it)
    root.talkReceived = 0; // samples of agent audio received

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
      lines.appendChild(li);
      li.scrollIntoView({ block: "nearest" });
      return li;
    }

    function markCut(li) {
      if (li.querySelector(".tag")) return;
      const tag = document.createElement("span");
      tag.className = "tag";
      tag.textContent = "interrupted";
      li.appendChild(document.createTextNode(" "));
      li.appendChild(tag);
    }

    function onEvent(event) {
      if (event.type === "conversation_initiation_metadata") {
        status.textContent = "Connected: speak when you are ready.";
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
        if (player) player.port.postMessage({ clear: true });
        cut = line("agent", "…", "interrupted");
        markCut(cut);
      } else if (event.type === "agent_response_correction") {
        const text = event.agent_response_correction_event.corrected_agent_response;
        const li = cut || line("agent", "", "interrupted");
        li.querySelector("span").textContent = text || "…";
        markCut(li);
        cut = null;
      } else if (event.type === "error") {
        lastError = event.error_event.message;
        fail(lastError);
      } else if (event.type === "saved") {
        status.textContent = "Saved.";
        // A new query makes it a real load (a hash alone would not reload the list).
        window.location.assign(root.dataset.after + "?saved=" + encodeURIComponent(event.conversation_id) + "#conversations");
      }
    }

    function stopAudio() {
      if (mic) mic.getTracks().forEach((t) => t.stop());
      if (micContext) micContext.close();
      if (playContext) playContext.close();
      mic = micContext = playContext = player = null;
      level.value = 0;
    }

    function finish() {
      mute.disabled = end.disabled = true;
      opener.disabled = false;
      stopAudio();
    }

    async function start() {
      errorBox.hidden = true;
      errorBox.textContent = "";
      lastError = "";
      lines.textContent = "";
      partial = cut = null;
      ending = muted = false;
      mute.setAttribute("aria-pressed", "false");
      mute.textContent = "Mute";
      panel.hidden = false;
      opener.setAttribute("aria-expanded", "true");
      opener.disabled = true;
      status.textContent = "Asking for the microphone…";
      try {
        mic = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: true } });
      } catch (err) {
        fail("The microphone is not available (" + err.message + "): allow it in the browser to talk.");
        status.textContent = "Not connected.";
        opener.disabled = false;
        return;
      }
      playContext = new AudioContext({ sampleRate: 16000 });
      await playContext.audioWorklet.addModule(root.dataset.player);
      player = new AudioWorkletNode(playContext, "pcm-player", { outputChannelCount: [1] });
      player.port.onmessage = (m) => { root.talkPlayed = m.data.played; };
      player.connect(playContext.destination);
      micContext = new AudioContext();
      await micContext.audioWorklet.addModule(root.dataset.worklet);
      const source = micContext.createMediaStreamSource(mic);
      const node = new AudioWorkletNode(micContext, "pcm-worklet");
      node.port.onmessage = (m) => {
        level.value = muted ? 0 : m.data.peak;
        if (ws && ws.readyState === WebSocket.OPEN && !ending) ws.send(m.data.pcm);
      };
      source.connect(node);
      status.textContent = "Connecting…";
      ws = new WebSocket(socketUrl(root.dataset.socket));
      ws.binaryType = "arraybuffer";
      ws.onopen = () => { mute.disabled = end.disabled = false; end.focus(); };
      ws.onmessage = (m) => {
        if (m.data instanceof ArrayBuffer) {
          root.talkReceived += m.data.byteLength / 2;
          if (player) player.port.postMessage({ pcm: m.data }, [m.data]);
          return;
        }
        let event;
        try { event = JSON.parse(m.data); } catch (e) { return; }
        onEvent(event);
      };
      ws.onclose = (e) => {
        finish();
        if (e.code === 1000 && ending) return;
        const why = lastError || CLOSED[e.code] || "The connection was lost.";
        status.textContent = "Not connected.";
        fail("The conversation closed: " + why + (e.code === 1000 ? "" : " (code " + e.code + ")"));
      };
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
      status.textContent = "Saving the conversation…";
      if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "end" }));
    });
    root.addEventListener("keydown", (e) => {
      if (e.key === "Escape" && !end.disabled) end.click();
    });
    root.talkSocket = () => ws; // for tests: the current socket
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("[data-talk-panel]").forEach(bindTalk);
  });
})();
