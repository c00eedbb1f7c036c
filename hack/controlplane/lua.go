package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	lua "github.com/yuin/gopher-lua"
)

// luaCmd runs an Argo CD resource health script the way Argo CD does: in gopher-lua
// (Lua 5.1, the interpreter Argo CD embeds) with only the base, table, string and math
// libraries, the object (JSON on standard input) as the global `obj`, and the table the
// script returns read as the health: prints `<status>\t<message>`.
func luaCmd(args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("usage: controlplane lua SCRIPT.lua < object.json")
	}
	script, err := os.ReadFile(args[0])
	if err != nil {
		return err
	}
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		return err
	}
	var obj any
	if err := json.Unmarshal(data, &obj); err != nil {
		return fmt.Errorf("reading the object: %w", err)
	}
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.StringLibName, lua.OpenString},
		{lua.MathLibName, lua.OpenMath},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return err
		}
	}
	l.SetGlobal("obj", toLua(l, obj))
	if err := l.DoString(string(script)); err != nil {
		return fmt.Errorf("running the script: %w", err)
	}
	hs, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return fmt.Errorf("the script returned %s, not a table", l.Get(-1).Type())
	}
	fmt.Printf("%s\t%s\n", lua.LVAsString(hs.RawGetString("status")), lua.LVAsString(hs.RawGetString("message")))
	return nil
}

// toLua turns decoded JSON into Lua values as Argo CD does: objects and arrays are
// tables (arrays from index 1), JSON null is nil.
func toLua(l *lua.LState, v any) lua.LValue {
	switch v := v.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case []any:
		t := l.NewTable()
		for _, item := range v {
			t.Append(toLua(l, item))
		}
		return t
	case map[string]any:
		t := l.NewTable()
		for k, item := range v {
			t.RawSetString(k, toLua(l, item))
		}
		return t
	default:
		return lua.LString(fmt.Sprint(v))
	}
}
