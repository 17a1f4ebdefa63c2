/** The JSON events of an OpenAI-style server-sent-events body (`data: ...\n\n`), `[DONE]` left out. */
export async function* sseEvents(body: unknown): AsyncGenerator<any> {
  let buf = '';
  const dec = new TextDecoder();
  for await (const part of body as AsyncIterable<Uint8Array>) {
    buf += dec.decode(part, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const data = buf.slice(0, i).replace(/^data: /, '');
      buf = buf.slice(i + 2);
      if (data !== '[DONE]') yield JSON.parse(data);
    }
  }
}
