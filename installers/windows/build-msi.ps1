<#
.SYNOPSIS
  Builds the Teleposture agent MSI on Windows: PyInstaller bundle (own Python runtime), then WiX 3.
.DESCRIPTION
  Run from anywhere on a Windows machine with Python 3.11 (x64) and the WiX Toolset 3.14
  (choco install wixtoolset, or WIX environment variable pointing at it):
    powershell -ExecutionPolicy Bypass -File installers\windows\build-msi.ps1 -Version 0.1.0
  Output: dist\teleposture-agent-<Version>-x64.msi
.PARAMETER Version
  MSI ProductVersion (a.b.c); defaults to agent/__init__.py's __version__. A major upgrade needs a
  higher version than the installed one.
.PARAMETER OutDir
  Where the MSI goes (default: dist\ at the repository root).
#>
param(
    [string]$Version = "",
    [string]$OutDir = ""
)
$ErrorActionPreference = "Stop"
Set-StrictMode -Version Latest

$Repo = (Resolve-Path (Join-Path $PSScriptRoot "..\..")).Path
if (-not $OutDir) { $OutDir = Join-Path $Repo "dist" }
if (-not $Version) {
    $match = Select-String -Path (Join-Path $Repo "agent\__init__.py") -Pattern '^__version__ = "(.+)"$'
    if (-not $match) { throw "build-msi: no __version__ in agent\__init__.py; pass -Version a.b.c" }
    $Version = $match.Matches[0].Groups[1].Value
}
if ($Version -notmatch '^\d+\.\d+\.\d+$') {
    throw "build-msi: -Version must be a.b.c (MSI ProductVersion), found '$Version'"
}

function Invoke-Checked([string]$What, [scriptblock]$Command) {
    & $Command
    if ($LASTEXITCODE -ne 0) { throw "build-msi: $What failed (exit $LASTEXITCODE)" }
}

# WiX 3: candle/heat/light from WIX (set by the WiX installer) or PATH.
$WixBin = $null
if ($env:WIX) { $WixBin = Join-Path $env:WIX "bin" }
if (-not $WixBin -or -not (Test-Path (Join-Path $WixBin "candle.exe"))) {
    $candle = Get-Command candle.exe -ErrorAction SilentlyContinue
    if (-not $candle) { throw "build-msi: WiX Toolset 3 not found; install it (choco install wixtoolset) or set WIX" }
    $WixBin = Split-Path $candle.Source
}

$Stage = Join-Path ([System.IO.Path]::GetTempPath()) ("teleposture-msi-" + [guid]::NewGuid())
New-Item -ItemType Directory -Path $Stage | Out-Null
try {
    # 1. The bundle, built in a throwaway venv so the build machine's Python stays untouched.
    Invoke-Checked "creating the build venv" { python -m venv (Join-Path $Stage "venv") }
    $Py = Join-Path $Stage "venv\Scripts\python.exe"
    Invoke-Checked "installing the agent and PyInstaller" {
        & $Py -m pip install --quiet --disable-pip-version-check "$Repo[yaml]" pyinstaller pywin32
    }
    Invoke-Checked "PyInstaller" {
        & $Py -m PyInstaller --noconfirm --clean --distpath (Join-Path $Stage "dist") `
            --workpath (Join-Path $Stage "work") (Join-Path $Repo "installers\pyinstaller\teleposture-agent.spec")
    }
    $AgentDir = Join-Path $Stage "dist\teleposture-agent"
    $RuntimeDir = Join-Path $AgentDir "_internal"
    Invoke-Checked "the bundled agent's self-test" { & (Join-Path $AgentDir "teleposture-agent.exe") --version }

    # 2. Harvest _internal\ into ComponentGroup AgentRuntime (-ag: GUIDs derived from the install paths,
    #    so they stay the same from version to version, as component rules require).
    $Runtime = Join-Path $Stage "runtime.wxs"
    Invoke-Checked "heat" {
        & (Join-Path $WixBin "heat.exe") dir $RuntimeDir -nologo -cg AgentRuntime -dr AgentInternal `
            -srd -sreg -scom -ag -var var.RuntimeDir -platform x64 -out $Runtime
    }

    # 3. Compile and link.
    $Defines = @("-dToolchain=wix3", "-dWin64=yes", "-dVersion=$Version", "-dAgentDir=$AgentDir", "-dRuntimeDir=$RuntimeDir")
    Invoke-Checked "candle" {
        & (Join-Path $WixBin "candle.exe") -nologo -arch x64 @Defines -out (Join-Path $Stage "obj\") `
            (Join-Path $PSScriptRoot "teleposture-agent.wxs") $Runtime
    }
    New-Item -ItemType Directory -Force -Path $OutDir | Out-Null
    $Msi = Join-Path $OutDir "teleposture-agent-$Version-x64.msi"
    Invoke-Checked "light" {
        & (Join-Path $WixBin "light.exe") -nologo -spdb -out $Msi `
            (Join-Path $Stage "obj\teleposture-agent.wixobj") (Join-Path $Stage "obj\runtime.wixobj")
    }
    Write-Output $Msi
}
finally {
    Remove-Item -Recurse -Force $Stage -ErrorAction SilentlyContinue
}
