import { useEffect, useImperativeHandle, useRef, type Ref } from "react";

import { languageOf, monaco } from "./monacoSetup";

export interface EditorHandle {
  /** Show `text` as the file at `path`, with nothing unsaved. */
  load: (path: string, text: string) => void;
  value: () => string;
  /** What is shown now is what is saved. */
  markSaved: () => void;
  /** The selected text and its lines, if anything is selected. */
  selection: () => { text: string; lines: [number, number] } | null;
  focus: () => void;
}

interface Props {
  ref: Ref<EditorHandle>;
  label: string;
  onDirty: (dirty: boolean) => void;
  onSave: () => void;
}

function currentTheme(): string {
  return document.documentElement.dataset.theme === "dark" ? "vs-dark" : "vs";
}

/** Monaco on one model, reused from file to file. */
export function CodeEditor({ ref, label, onDirty, onSave }: Props) {
  const host = useRef<HTMLDivElement>(null);
  const editor = useRef<monaco.editor.IStandaloneCodeEditor | null>(null);
  const saved = useRef(0);
  const callbacks = useRef({ onDirty, onSave });
  callbacks.current = { onDirty, onSave };

  useEffect(() => {
    if (!host.current) return;
    const made = monaco.editor.create(host.current, {
      value: "",
      language: "plaintext",
      theme: currentTheme(),
      automaticLayout: true,
      minimap: { enabled: false },
      fontSize: 13,
      scrollBeyondLastLine: false,
      ariaLabel: label,
    });
    editor.current = made;
    const changed = made.onDidChangeModelContent(() => {
      const model = made.getModel();
      if (model) callbacks.current.onDirty(model.getAlternativeVersionId() !== saved.current);
    });
    made.addCommand(monaco.KeyMod.CtrlCmd | monaco.KeyCode.KeyS, () => callbacks.current.onSave());
    // Follow the dashboard's light or dark theme.
    const themes = new MutationObserver(() => monaco.editor.setTheme(currentTheme()));
    themes.observe(document.documentElement, { attributes: true, attributeFilter: ["data-theme"] });
    return () => {
      themes.disconnect();
      changed.dispose();
      made.getModel()?.dispose();
      made.dispose();
      editor.current = null;
    };
    // `label` is applied by the effect below; the editor is made once.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, []);

  useEffect(() => {
    editor.current?.updateOptions({ ariaLabel: label });
  }, [label]);

  useImperativeHandle(
    ref,
    () => ({
      load(path, text) {
        const model = editor.current?.getModel();
        if (!model) return;
        monaco.editor.setModelLanguage(model, languageOf(path));
        model.setValue(text);
        saved.current = model.getAlternativeVersionId();
        callbacks.current.onDirty(false);
      },
      value: () => editor.current?.getValue() ?? "",
      markSaved() {
        const model = editor.current?.getModel();
        if (model) saved.current = model.getAlternativeVersionId();
        callbacks.current.onDirty(false);
      },
      selection() {
        const made = editor.current;
        const range = made?.getSelection();
        const model = made?.getModel();
        if (!made || !range || !model || range.isEmpty()) return null;
        return { text: model.getValueInRange(range), lines: [range.startLineNumber, range.endLineNumber] };
      },
      focus: () => editor.current?.focus(),
    }),
    [],
  );

  return <div ref={host} className="code-editor" data-testid="code-editor" />;
}
